package netns

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"

	"github.com/rs/zerolog"
)

// Mode says how a sandbox reaches the network. See the package comment.
type Mode string

const (
	ModeNone     Mode = "none"
	ModeShared   Mode = "shared"
	ModeIsolated Mode = "isolated"
	ModeHost     Mode = "host"
)

// ParseMode checks a mode name from configuration or a command line; ""
// stands for ModeShared.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return ModeShared, nil
	case ModeNone, ModeShared, ModeIsolated, ModeHost:
		return m, nil
	}
	return "", fmt.Errorf("network mode %q: want none, shared, isolated or host: %w", s, ErrInvalid)
}

// Defaults for the zero fields of Config.
const (
	DefaultBridge      = "sf-br0"
	DefaultSlots       = 4
	DefaultNonePool    = 4
	DefaultChainPrefix = "SF-"
	DefaultStateDir    = "/run/sockfaas/net"
)

// DefaultSubnet is the bridge's subnet when Config.Subnet is the zero value.
var DefaultSubnet = netip.MustParsePrefix("10.213.0.0/16")

// DefaultHostPorts is where published ports get their host port when the
// request leaves it to the Manager: below Linux's default ephemeral range
// (32768-60999), so outgoing connections never hold one.
var DefaultHostPorts = PortRange{Min: 20000, Max: 29999}

// PortRange is an inclusive range of ports.
type PortRange struct {
	Min, Max int
}

// Config is the plain-data description of a Manager. Zero fields take the
// defaults above. Validate checks it without touching the system; New checks
// the rest against the host (routes, links) before it changes anything.
type Config struct {
	// Bridge names the bridge; it also prefixes the host-side veths
	// ("<Bridge>s<N>", "<Bridge>i<N>"), which is why it is at most 9
	// characters of [A-Za-z0-9_-]. Default DefaultBridge.
	Bridge string
	// Subnet is the bridge's IPv4 subnet, /16 to /29. The bridge takes the
	// first address, slot N the (N+2)th, isolated sandboxes the rest. It
	// must not overlap any route on the host. Default DefaultSubnet.
	Subnet netip.Prefix
	// Slots is the number of shared namespaces. Default DefaultSlots.
	Slots int
	// NonePool is how many loopback-only namespaces are kept ready for
	// ModeNone. Default DefaultNonePool; negative means no pool (each
	// ModeNone attachment then creates its namespace, ~1 ms).
	NonePool int
	// Egress lets sandboxes open connections out of the subnet (masqueraded
	// to the host's address). It turns net.ipv4.ip_forward on, which also
	// lets clients in other namespaces or hosts reach published ports.
	// Without it, new connections from the bridge to anywhere but the host
	// are dropped, and published ports are reachable from the host only.
	Egress bool
	// ChainPrefix prefixes the names of the iptables chains: <prefix>DNAT,
	// <prefix>POSTROUTING, <prefix>FORWARD, <prefix>INPUT. At most 17
	// characters. Default DefaultChainPrefix.
	ChainPrefix string
	// StateDir holds the lock file and the namespace files. It belongs to
	// one Manager at a time. Default DefaultStateDir.
	StateDir string
	// HostPorts is where ports published with HostPort 0 are allocated.
	// Default DefaultHostPorts.
	HostPorts PortRange
	// DefaultMode is the mode of Attach(ctx, "", ...). Default ModeShared.
	DefaultMode Mode
	// Logger receives lifecycle events at info and per-attachment events at
	// debug. The zero value logs nothing.
	Logger zerolog.Logger
}

var (
	bridgePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,8}$`)
	chainPattern  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,16}$`)
)

// Subnets a bridge may never take: they mean something else to the kernel.
var reservedSubnets = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"), // multicast and class E
}

// maxSlots keeps slot link names ("<Bridge>s<N>") within 15 characters.
const maxSlots = 999

func (c Config) withDefaults() Config {
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if !c.Subnet.IsValid() {
		c.Subnet = DefaultSubnet
	}
	if c.Slots == 0 {
		c.Slots = DefaultSlots
	}
	if c.NonePool == 0 {
		c.NonePool = DefaultNonePool
	} else if c.NonePool < 0 {
		c.NonePool = 0
	}
	if c.ChainPrefix == "" {
		c.ChainPrefix = DefaultChainPrefix
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.HostPorts == (PortRange{}) {
		c.HostPorts = DefaultHostPorts
	}
	if c.DefaultMode == "" {
		c.DefaultMode = ModeShared
	}
	return c
}

// Validate checks the configuration (with defaults applied) without touching
// the system. Errors wrap ErrInvalid.
func (c Config) Validate() error {
	c = c.withDefaults()
	if !bridgePattern.MatchString(c.Bridge) {
		return fmt.Errorf("bridge name %q: want 1-9 of [A-Za-z0-9_-], starting with a letter or digit: %w", c.Bridge, ErrInvalid)
	}
	if !chainPattern.MatchString(c.ChainPrefix) {
		return fmt.Errorf("chain prefix %q: want 1-17 of [A-Za-z0-9_-], starting with a letter: %w", c.ChainPrefix, ErrInvalid)
	}
	s := c.Subnet
	if !s.Addr().Is4() {
		return fmt.Errorf("subnet %s: only IPv4 is supported: %w", s, ErrInvalid)
	}
	if s.Masked() != s {
		return fmt.Errorf("subnet %s has host bits set (did you mean %s?): %w", s, s.Masked(), ErrInvalid)
	}
	if s.Bits() < 16 || s.Bits() > 29 {
		return fmt.Errorf("subnet %s: want a prefix length from /16 to /29: %w", s, ErrInvalid)
	}
	for _, r := range reservedSubnets {
		if s.Overlaps(r) {
			return fmt.Errorf("subnet %s overlaps the reserved %s: %w", s, r, ErrInvalid)
		}
	}
	if c.Slots < 0 || c.Slots > maxSlots {
		return fmt.Errorf("slots %d: want 1 to %d: %w", c.Slots, maxSlots, ErrInvalid)
	}
	// Network and broadcast addresses, the gateway, the slots, and at least
	// one address for an isolated sandbox.
	if hosts := 1<<(32-s.Bits()) - 2; hosts < 1+c.Slots+1 {
		return fmt.Errorf("subnet %s has %d host addresses, too few for the bridge and %d slots: %w", s, hosts, c.Slots, ErrInvalid)
	}
	if !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("state directory %q is not an absolute path: %w", c.StateDir, ErrInvalid)
	}
	if r := c.HostPorts; r.Min < 1 || r.Max > 65535 || r.Min > r.Max {
		return fmt.Errorf("host port range %d-%d: want 1 <= min <= max <= 65535: %w", r.Min, r.Max, ErrInvalid)
	}
	if _, err := ParseMode(string(c.DefaultMode)); err != nil {
		return fmt.Errorf("default mode: %w", err)
	}
	return nil
}

// PortSpec asks for a port inside the sandbox to be reachable at a host
// address and port.
type PortSpec struct {
	// Proto is "tcp" (the default when empty) or "udp".
	Proto string
	// ContainerPort is the port the sandbox listens on, 1-65535.
	ContainerPort int
	// HostPort is where clients connect; 0 lets the Manager pick one from
	// Config.HostPorts. A port that is already published, or bound by any
	// process on the host, is refused (ErrInvalid).
	HostPort int
	// HostIP is the host address clients connect to; it must be a local IPv4
	// address. The zero value means 127.0.0.1; 0.0.0.0 means every local
	// address, which exposes the port to whatever network the host is on.
	HostIP netip.Addr
}

// PublishedPort is a port as published: clients connect to Host, the
// sandbox listens on Sandbox.Port() (at Sandbox.Addr(), or any address).
type PublishedPort struct {
	Proto   string
	Host    netip.AddrPort
	Sandbox netip.AddrPort
}

var loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// normalizePorts checks port specs without touching the system and fills in
// their defaults. Two specs may map the same container port (to different
// host ports), but not the same host port.
func normalizePorts(specs []PortSpec) ([]PortSpec, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	out := make([]PortSpec, len(specs))
	seen := make(map[portKey]bool, len(specs))
	for i, p := range specs {
		if p.Proto == "" {
			p.Proto = "tcp"
		}
		if p.Proto != "tcp" && p.Proto != "udp" {
			return nil, fmt.Errorf("port %d: protocol %q: want tcp or udp: %w", p.ContainerPort, p.Proto, ErrInvalid)
		}
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return nil, fmt.Errorf("container port %d out of range 1-65535: %w", p.ContainerPort, ErrInvalid)
		}
		if p.HostPort < 0 || p.HostPort > 65535 {
			return nil, fmt.Errorf("host port %d out of range 1-65535 (0 to allocate): %w", p.HostPort, ErrInvalid)
		}
		if !p.HostIP.IsValid() {
			p.HostIP = loopback
		}
		if !p.HostIP.Is4() {
			return nil, fmt.Errorf("host address %s: only IPv4 is supported: %w", p.HostIP, ErrInvalid)
		}
		if p.HostPort != 0 {
			k := portKey{p.Proto, p.HostPort}
			if seen[k] {
				return nil, fmt.Errorf("host port %s/%d requested twice: %w", p.Proto, p.HostPort, ErrInvalid)
			}
			seen[k] = true
		}
		out[i] = p
	}
	return out, nil
}

// portKey identifies a port of one protocol: a host port (the Manager never
// publishes one port number twice per protocol, whatever the host address,
// so that a port on 0.0.0.0 and the same port on 127.0.0.1 cannot shadow
// each other) or a port inside a namespace.
type portKey struct {
	proto string
	port  int
}
