package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Every link this package makes carries an alias starting with aliasPrefix:
// Cleanup deletes a link only when both its name and its alias say it is
// ours. The bridge's alias also names the state directory of the Manager
// that owns it, so that a Manager with another state directory does not
// take it for a leftover, and marks whether ip_forward was off before that
// Manager turned it on (see forward_linux.go).
const (
	aliasPrefix       = "sockfaas "
	aliasVeth         = "sockfaas veth"
	bridgeAliasPrefix = "sockfaas bridge "
	forwardMark       = " [ip_forward was off]"
)

func bridgeAlias(stateDir string, forwardWasOff bool) string {
	if forwardWasOff {
		return bridgeAliasPrefix + stateDir + forwardMark
	}
	return bridgeAliasPrefix + stateDir
}

func parseBridgeAlias(alias string) (stateDir string, forwardWasOff, ok bool) {
	rest, ok := strings.CutPrefix(alias, bridgeAliasPrefix)
	if !ok {
		return "", false, false
	}
	stateDir, forwardWasOff = strings.CutSuffix(rest, forwardMark)
	return stateDir, forwardWasOff, true
}

// peerName is the sandbox-side veth's name inside its namespace.
const peerName = "eth0"

func ours(l netlink.Link) bool { return strings.HasPrefix(l.Attrs().Alias, aliasPrefix) }

func slotLinkName(bridge string, i int) string { return bridge + "s" + strconv.Itoa(i) }

func isolatedLinkName(bridge string, host uint32) string {
	return bridge + "i" + strconv.FormatUint(uint64(host), 10)
}

// ourLinkName reports whether name is the bridge or one of its veths.
func ourLinkName(bridge, name string) bool {
	if name == bridge {
		return true
	}
	rest, ok := strings.CutPrefix(name, bridge)
	if !ok || len(rest) < 2 || (rest[0] != 's' && rest[0] != 'i') {
		return false
	}
	_, err := strconv.ParseUint(rest[1:], 10, 32)
	return err == nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// ownBridge checks that a link named cfg.Bridge, if there is one, is a
// bridge sockfaas made for cfg.StateDir, and returns its index (-1 if there
// is none).
func ownBridge(cfg Config) (int, error) {
	l, err := netlink.LinkByName(cfg.Bridge)
	if isNotFound(err) {
		return -1, nil
	}
	if err != nil {
		return -1, fmt.Errorf("look up link %q: %w", cfg.Bridge, err)
	}
	if err := checkOwner(l, cfg); err != nil {
		return -1, err
	}
	return l.Attrs().Index, nil
}

// checkOwner checks that l is a bridge sockfaas made for cfg.StateDir.
func checkOwner(l netlink.Link, cfg Config) error {
	dir, _, ok := parseBridgeAlias(l.Attrs().Alias)
	if !ok || l.Type() != "bridge" {
		return fmt.Errorf("link %q exists and was not made by sockfaas: %w", cfg.Bridge, ErrInvalid)
	}
	if dir != cfg.StateDir {
		return fmt.Errorf("bridge %q belongs to the sockfaas state directory %s; close that Manager (or run Cleanup with its configuration) or choose another bridge name: %w", cfg.Bridge, dir, ErrBusy)
	}
	return nil
}

// checkHost refuses, before anything is changed, a bridge name taken by a
// link that is not ours and a subnet that overlaps any route in any routing
// table (the default route aside). Routes through a bridge left by a crashed
// run of the same configuration do not count: Cleanup removes it.
func checkHost(cfg Config) error {
	stale, err := ownBridge(cfg)
	if err != nil {
		return err
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		dst, ok := routeDst(r)
		if !ok || r.LinkIndex == stale {
			continue
		}
		if dst.Overlaps(cfg.Subnet) {
			dev := ""
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				dev = " dev " + l.Attrs().Name
			}
			return fmt.Errorf("subnet %s overlaps the route to %s%s (table %d): %w", cfg.Subnet, dst, dev, r.Table, ErrInvalid)
		}
	}
	return nil
}

// routeDst is a route's destination, or false for a default route.
func routeDst(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(r.Dst.IP)
	ones, _ := r.Dst.Mask.Size()
	if !ok || ones == 0 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}

// makeBridge creates the bridge (or adopts ours if it exists), gives it the
// gateway address and turns on route_localnet for it.
func makeBridge(cfg Config, gateway netip.Addr) (netlink.Link, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = cfg.Bridge
	attrs.Flags = net.FlagUp
	err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create bridge %s: %w", cfg.Bridge, err)
	}
	created := err == nil
	br, err := netlink.LinkByName(cfg.Bridge)
	if err != nil {
		return nil, fmt.Errorf("look up bridge %s: %w", cfg.Bridge, err)
	}
	if created {
		// The kernel ignores IFLA_IFALIAS when it creates a link.
		if err := netlink.LinkSetAlias(br, bridgeAlias(cfg.StateDir, false)); err != nil {
			_ = netlink.LinkDel(br)
			return nil, fmt.Errorf("mark bridge %s as ours: %w", cfg.Bridge, err)
		}
	} else if err := checkOwner(br, cfg); err != nil {
		return nil, err
	}
	if err := netlink.AddrReplace(br, &netlink.Addr{IPNet: ipNet(gateway, cfg.Subnet.Bits())}); err != nil {
		return nil, fmt.Errorf("address bridge %s: %w", cfg.Bridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bring up bridge %s: %w", cfg.Bridge, err)
	}
	// A DNAT from a 127.0.0.1 published port sends packets with a loopback
	// source out of the bridge (before POSTROUTING masquerades them), and
	// brings replies back to a loopback destination: both are martians
	// unless route_localnet is on for this interface. The setting vanishes
	// with the bridge; SF-INPUT stops sandboxes abusing it.
	if err := writeSysctl("/proc/sys/net/ipv4/conf/"+cfg.Bridge+"/route_localnet", "1"); err != nil {
		return nil, err
	}
	return br, nil
}

// plumb creates a namespace pinned at path whose eth0 is the peer of a new
// veth hostLink on the bridge, with address addr and a default route via the
// gateway. The peer is created directly inside the namespace. On error
// nothing is left behind.
func (m *Manager) plumb(path, hostLink string, addr netip.Addr) (err error) {
	h, err := createNS(path)
	if err != nil {
		return err
	}
	defer h.Close()
	var veth *netlink.Veth
	defer func() {
		if err != nil {
			if veth != nil {
				_ = netlink.LinkDel(veth)
			}
			_ = destroyNS(path)
		}
	}()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, os.NewSyscallError("open", err))
	}
	defer unix.Close(fd)

	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostLink
	attrs.MasterIndex = m.bridgeIndex
	attrs.Flags = net.FlagUp
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: peerName, PeerNamespace: netlink.NsFd(fd), PeerTxQLen: -1}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("create veth %s: %w", hostLink, err)
	}
	veth = v
	if err := netlink.LinkSetAlias(veth, aliasVeth); err != nil {
		return fmt.Errorf("mark veth %s as ours: %w", hostLink, err)
	}
	// Isolated bridge ports forward only to the bridge itself (the host),
	// never to each other: sandboxes in different namespaces cannot talk
	// at layer 2, and SF-FORWARD stops them going through the host.
	if err := netlink.LinkSetIsolated(veth, true); err != nil {
		return fmt.Errorf("isolate bridge port %s: %w", hostLink, err)
	}
	peer, err := h.LinkByName(peerName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", peerName, path, err)
	}
	if err := h.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(addr, m.cfg.Subnet.Bits())}); err != nil {
		return fmt.Errorf("address %s in %s: %w", peerName, path, err)
	}
	if err := h.LinkSetUp(peer); err != nil {
		return fmt.Errorf("bring up %s in %s: %w", peerName, path, err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: peer.Attrs().Index, Gw: m.gateway.AsSlice()}); err != nil {
		return fmt.Errorf("default route in %s: %w", path, err)
	}
	return nil
}

// deleteLink deletes a link by name if it exists and is ours.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up link %s: %w", name, err)
	}
	if !ours(l) {
		return nil
	}
	if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// removeLinks deletes the bridge and every veth of it that sockfaas made.
// Veths go first: deleting the bridge does not delete its ports.
func removeLinks(bridge string) error {
	links, err := netlink.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	var br netlink.Link
	for _, l := range links {
		name := l.Attrs().Name
		if !ourLinkName(bridge, name) || !ours(l) {
			continue
		}
		if name == bridge {
			br = l
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
		}
	}
	if br != nil {
		if err := netlink.LinkDel(br); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", bridge, err))
		}
	}
	return errors.Join(errs...)
}

func writeSysctl(path, value string) error {
	if err := os.WriteFile(path, []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("set %s: %w", sysctlName(path), err)
	}
	return nil
}

// sysctlName turns /proc/sys/net/ipv4/ip_forward into net.ipv4.ip_forward,
// for messages.
func sysctlName(path string) string {
	return strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", ".")
}
