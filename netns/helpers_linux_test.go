package netns

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Network safety: these helpers only ever connect to loopback or to
// addresses inside namespaces that the test (or the Manager under test)
// created. The "outside world" is a namespace of the test's own.

const (
	dialTimeout = 2 * time.Second
	// refusedTimeout bounds dials that are expected to fail: port isolation
	// makes some of them time out rather than be refused.
	refusedTimeout = time.Second
	setupTimeout   = 60 * time.Second
)

func hex4(tb testing.TB) string {
	tb.Helper()
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

var (
	pickedMu sync.Mutex
	picked   = map[netip.Prefix]bool{}
)

// freeSubnet picks a random 10.x.y.0/bits (bits >= 14) that overlaps no
// route on the host and nothing another test in this process picked.
func freeSubnet(tb testing.TB, bits int) netip.Prefix {
	tb.Helper()
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		tb.Fatal(err)
	}
	taken := func(p netip.Prefix) bool {
		for q := range picked {
			if q.Overlaps(p) {
				return true
			}
		}
		for _, r := range routes {
			if dst, ok := routeDst(r); ok && dst.Overlaps(p) {
				return true
			}
		}
		return false
	}
	pickedMu.Lock()
	defer pickedMu.Unlock()
	for range 1000 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			tb.Fatal(err)
		}
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200 + b[0]%50, b[1], 0}), bits).Masked()
		if !taken(p) {
			picked[p] = true
			return p
		}
	}
	tb.Fatalf("no free /%d in 10.200.0.0-10.249.255.255", bits)
	return netip.Prefix{}
}

// testConfig names everything uniquely: bridge and links "sft<hex>...",
// chains "SF-T<hex>-...", a state directory under /run.
func testConfig(tb testing.TB) Config {
	h := hex4(tb)
	return Config{
		Bridge:      "sft" + h,
		Subnet:      freeSubnet(tb, 24),
		Slots:       2,
		NonePool:    1,
		ChainPrefix: "SF-T" + h + "-",
		StateDir:    testutil.StateDir(tb),
		Logger:      zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.InfoLevel),
	}
}

// newTestManager starts a Manager on testConfig (changed by edit) and, when
// the test ends, closes it and checks that nothing is left.
func newTestManager(tb testing.TB, edit func(*Config)) *Manager {
	tb.Helper()
	testutil.RequiresRoot(tb)
	cfg := testConfig(tb)
	if edit != nil {
		edit(&cfg)
	}
	forward := readForward(tb)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	m, err := New(ctx, cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			tb.Errorf("Close: %v", err)
		}
		assertNoDebris(tb, m.Config(), forward)
	})
	return m
}

func readForward(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(forwardSysctl)
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// assertNoDebris checks that nothing of cfg is left on the host: no link, no
// address in the subnet, no chain, no mount or namespace file, and
// ip_forward as it was (unless another sockfaas bridge needs it now).
func assertNoDebris(tb testing.TB, cfg Config, forward string) {
	tb.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, cfg.Bridge) {
			tb.Errorf("link %s left behind", l.Attrs().Name)
		}
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		tb.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && cfg.Subnet.Contains(ip.Unmap()) {
			tb.Errorf("address %s left behind", a.IPNet)
		}
	}
	for _, args := range [][]string{{"-t", "nat", "-S"}, {"-t", "filter", "-S"}} {
		out, err := exec.Command("iptables", args...).CombinedOutput()
		if err != nil {
			tb.Fatalf("iptables %v: %v: %s", args, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, cfg.ChainPrefix) {
				tb.Errorf("iptables %v: left behind: %s", args, line)
			}
		}
	}
	if mounts := testutil.MountsUnder(cfg.StateDir); len(mounts) > 0 {
		tb.Errorf("mounts left behind: %v", mounts)
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "ns")); !errors.Is(err, os.ErrNotExist) {
		tb.Errorf("namespace directory left behind (stat: %v)", err)
	}
	if got := readForward(tb); got != forward {
		if other, _ := otherForwardingBridge(cfg.Bridge); !other {
			tb.Errorf("net.ipv4.ip_forward = %s after close, was %s", got, forward)
		}
	}
}

// inNS runs fn on a thread inside the namespace pinned at path ("" means
// the host's). Sockets fn opens stay in that namespace.
func inNS(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- err
			return // the thread stays locked and dies
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// serveIn listens on addr inside the namespace at path. Every connection is
// answered with the client address the server sees, then closed.
func serveIn(tb testing.TB, path, addr string) net.Addr {
	tb.Helper()
	var l net.Listener
	if err := inNS(path, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		tb.Fatalf("listen on %s in %q: %v", addr, path, err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() {
		l.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(dialTimeout))
			fmt.Fprintln(c, c.RemoteAddr())
			c.Close()
		}
	}()
	return l.Addr()
}

// dialFrom connects from inside the namespace at path to addr and returns
// the client address the server reported.
func dialFrom(path, addr string, timeout time.Duration) (netip.AddrPort, error) {
	var seen string
	err := inNS(path, func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		seen, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.ParseAddrPort(strings.TrimSpace(seen))
}

// outsideNS stands in for the world beyond the host: a namespace of the
// test's own, joined to the host by a veth on a subnet of its own.
type outsideNS struct {
	path string
	host netip.Addr // the host's end of the link
	addr netip.Addr // the namespace's end
}

func newOutside(tb testing.TB) *outsideNS {
	tb.Helper()
	testutil.RequiresRoot(tb)
	sub := freeSubnet(tb, 24)
	o := &outsideNS{
		path: filepath.Join(testutil.StateDir(tb), "outside"),
		host: sub.Addr().Next(),
		addr: sub.Addr().Next().Next(),
	}
	h, err := createNS(o.path)
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	linkName := "sfto" + hex4(tb) // never a prefix of a test bridge "sft<hex>"
	tb.Cleanup(func() {
		if l, err := netlink.LinkByName(linkName); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				tb.Errorf("delete %s: %v", linkName, err)
			}
		}
		if err := destroyNS(o.path); err != nil {
			tb.Error(err)
		}
	})
	fd, err := unix.Open(o.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer unix.Close(fd)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = linkName
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(fd)}
	if err := netlink.LinkAdd(veth); err != nil {
		tb.Fatal(err)
	}
	if err := netlink.AddrAdd(veth, &netlink.Addr{IPNet: ipNet(o.host, 24)}); err != nil {
		tb.Fatal(err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		tb.Fatal(err)
	}
	peer, err := h.LinkByName("eth0")
	if err != nil {
		tb.Fatal(err)
	}
	if err := h.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(o.addr, 24)}); err != nil {
		tb.Fatal(err)
	}
	if err := h.LinkSetUp(peer); err != nil {
		tb.Fatal(err)
	}
	return o
}

func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	tb.Cleanup(cancel)
	return ctx
}

func attach(tb testing.TB, m *Manager, mode Mode, ports ...PortSpec) *Attachment {
	tb.Helper()
	a, err := m.Attach(testContext(tb), mode, ports)
	if err != nil {
		tb.Fatalf("Attach(%s, %v): %v", mode, ports, err)
	}
	return a
}

// dnatRules lists the rules in m's DNAT chain.
func dnatRules(tb testing.TB, m *Manager) []string {
	tb.Helper()
	rules, err := m.ipt.List("nat", m.chains.dnat)
	if err != nil {
		tb.Fatal(err)
	}
	return rules[1:] // the first line declares the chain
}
