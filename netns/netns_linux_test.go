package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestSharedEgress(t *testing.T) {
	out := newOutside(t)
	m := newTestManager(t, func(c *Config) { c.Egress = true })
	server := serveIn(t, out.path, netip.AddrPortFrom(out.addr, 0).String())

	a := attach(t, m, ModeShared)
	if a.NSPath() == "" || !m.Config().Subnet.Contains(a.Addr()) {
		t.Fatalf("attachment: ns %q, addr %s", a.NSPath(), a.Addr())
	}
	seen, err := dialFrom(a.NSPath(), server.String(), dialTimeout)
	if err != nil {
		t.Fatalf("sandbox -> outside server: %v", err)
	}
	// Masqueraded: the server sees the host's address on the outside link,
	// not the sandbox's.
	if seen.Addr() != out.host {
		t.Errorf("outside server saw %s, want the host's NAT address %s", seen.Addr(), out.host)
	}
	if err := a.Release(testContext(t)); err != nil {
		t.Fatal(err)
	}
}

func TestEgressDisabled(t *testing.T) {
	out := newOutside(t)
	server := serveIn(t, out.path, netip.AddrPortFrom(out.addr, 0).String())
	// With a Manager that has egress on, ip_forward is on: the other
	// Manager's sandbox is held back by its own rules, not by the sysctl.
	open := newTestManager(t, func(c *Config) { c.Egress = true })
	closed := newTestManager(t, nil)
	if _, err := dialFrom(attach(t, open, ModeShared).NSPath(), server.String(), dialTimeout); err != nil {
		t.Fatalf("control: sandbox with egress -> outside: %v", err)
	}
	if _, err := dialFrom(attach(t, closed, ModeShared).NSPath(), server.String(), refusedTimeout); err == nil {
		t.Fatal("sandbox reached the outside server with Egress off")
	}
}

func TestSharedIngress(t *testing.T) {
	out := newOutside(t)
	m := newTestManager(t, func(c *Config) { c.Egress = true })
	a := attach(t, m, ModeShared,
		PortSpec{ContainerPort: 8080},                   // 127.0.0.1, allocated host port
		PortSpec{ContainerPort: 8080, HostIP: out.host}) // the host's address facing the client
	serveIn(t, a.NSPath(), "0.0.0.0:8080")
	ports := a.Ports()
	if len(ports) != 2 || ports[0].Host.Addr() != loopback || ports[1].Host.Addr() != out.host ||
		ports[0].Sandbox != netip.AddrPortFrom(a.Addr(), 8080) {
		t.Fatalf("published ports: %v", ports)
	}
	r := m.Config().HostPorts
	for _, p := range ports {
		if port := int(p.Host.Port()); port < r.Min || port > r.Max {
			t.Errorf("host port %d outside %d-%d", port, r.Min, r.Max)
		}
	}

	// From the host's loopback: masqueraded to the bridge's address.
	seen, err := dialFrom("", ports[0].Host.String(), dialTimeout)
	if err != nil {
		t.Fatalf("host loopback -> published port: %v", err)
	}
	if seen.Addr() != m.Gateway() {
		t.Errorf("sandbox saw loopback client as %s, want the bridge address %s", seen.Addr(), m.Gateway())
	}
	// From another namespace: the client's own address is kept.
	seen, err = dialFrom(out.path, ports[1].Host.String(), dialTimeout)
	if err != nil {
		t.Fatalf("client namespace -> published port: %v", err)
	}
	if seen.Addr() != out.addr {
		t.Errorf("sandbox saw the client as %s, want %s", seen.Addr(), out.addr)
	}

	// Release removes the rules (in the background) and frees the ports.
	if n := len(dnatRules(t, m)); n != 2 {
		t.Fatalf("%d DNAT rules, want 2", n)
	}
	if err := a.Release(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if err := m.Settle(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if rules := dnatRules(t, m); len(rules) != 0 {
		t.Errorf("DNAT rules left after release: %v", rules)
	}
	if _, err := dialFrom("", ports[0].Host.String(), refusedTimeout); err == nil {
		t.Error("published port still answers after release")
	}
	if len(m.hostPorts) != 0 || len(a.slot.ports) != 0 {
		t.Errorf("reservations left: host %v, slot %v", m.hostPorts, a.slot.ports)
	}
}

func TestIngressFromLoopbackWithoutEgress(t *testing.T) {
	m := newTestManager(t, nil)
	a := attach(t, m, ModeShared, PortSpec{ContainerPort: 9000})
	serveIn(t, a.NSPath(), "0.0.0.0:9000")
	if _, err := dialFrom("", a.Ports()[0].Host.String(), dialTimeout); err != nil {
		t.Fatalf("host loopback -> published port: %v", err)
	}
}

func TestNoneHasNoRouteOut(t *testing.T) {
	out := newOutside(t)
	m := newTestManager(t, func(c *Config) { c.Egress = true })
	server := serveIn(t, out.path, netip.AddrPortFrom(out.addr, 0).String())

	a := attach(t, m, ModeNone)
	if a.NSPath() == "" || a.Addr().IsValid() {
		t.Fatalf("attachment: ns %q, addr %s", a.NSPath(), a.Addr())
	}
	_, err := dialFrom(a.NSPath(), server.String(), dialTimeout)
	if !errors.Is(err, syscall.ENETUNREACH) {
		t.Fatalf("dial out of a none namespace: %v, want ENETUNREACH", err)
	}
	// Loopback works.
	local := serveIn(t, a.NSPath(), "127.0.0.1:0")
	if _, err := dialFrom(a.NSPath(), local.String(), dialTimeout); err != nil {
		t.Fatalf("loopback inside the none namespace: %v", err)
	}

	// Used once: a second sandbox gets another namespace, and the first is
	// destroyed after Release.
	b := attach(t, m, ModeNone)
	if b.NSPath() == a.NSPath() {
		t.Fatal("two none attachments share a namespace")
	}
	for _, x := range []*Attachment{a, b} {
		if err := x.Release(testContext(t)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Settle(testContext(t)); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Attachment{a, b} {
		if _, err := os.Stat(x.NSPath()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace file %s still there after release: %v", x.NSPath(), err)
		}
	}
}

func TestIsolated(t *testing.T) {
	out := newOutside(t)
	m := newTestManager(t, func(c *Config) { c.Egress = true })
	server := serveIn(t, out.path, netip.AddrPortFrom(out.addr, 0).String())

	a := attach(t, m, ModeIsolated, PortSpec{ContainerPort: 8080})
	b := attach(t, m, ModeIsolated, PortSpec{ContainerPort: 8080})
	if a.NSPath() == b.NSPath() || a.Addr() == b.Addr() {
		t.Fatalf("two isolated attachments share %s / %s", a.NSPath(), a.Addr())
	}
	for _, s := range m.slots {
		if s.addr == a.Addr() || s.nsPath == a.NSPath() {
			t.Fatal("isolated attachment got a slot's namespace or address")
		}
	}
	seen, err := dialFrom(a.NSPath(), server.String(), dialTimeout)
	if err != nil {
		t.Fatalf("isolated sandbox -> outside server: %v", err)
	}
	if seen.Addr() != out.host {
		t.Errorf("outside server saw %s, want %s", seen.Addr(), out.host)
	}
	serveIn(t, a.NSPath(), "0.0.0.0:8080")
	if _, err := dialFrom("", a.Ports()[0].Host.String(), dialTimeout); err != nil {
		t.Fatalf("host loopback -> isolated published port: %v", err)
	}

	link := isolatedLinkName(m.Config().Bridge, a.host)
	if _, err := netlink.LinkByName(link); err != nil {
		t.Fatalf("host veth %s: %v", link, err)
	}
	if err := a.Release(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if err := m.Settle(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(link); !isNotFound(err) {
		t.Errorf("host veth %s still there after release: %v", link, err)
	}
	if _, err := os.Stat(a.NSPath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file still there after release: %v", err)
	}
	if m.hostsUsed[a.host] {
		t.Error("address still reserved after release")
	}
}

func TestSlotsCannotReachEachOther(t *testing.T) {
	m := newTestManager(t, func(c *Config) { c.Egress = true }) // forwarding on: the worst case
	a := attach(t, m, ModeShared)
	b := attach(t, m, ModeShared)
	if a.NSPath() == b.NSPath() {
		t.Fatal("with two free slots, two attachments got the same one")
	}
	onLoopback := serveIn(t, a.NSPath(), "127.0.0.1:9000")
	serveIn(t, a.NSPath(), "0.0.0.0:9001")

	// Controls: A reaches its own loopback server, the host reaches A.
	if _, err := dialFrom(a.NSPath(), onLoopback.String(), dialTimeout); err != nil {
		t.Fatalf("A -> its own loopback: %v", err)
	}
	if _, err := dialFrom("", netip.AddrPortFrom(a.Addr(), 9001).String(), dialTimeout); err != nil {
		t.Fatalf("host -> A: %v", err)
	}
	for _, target := range []string{
		netip.AddrPortFrom(a.Addr(), 9000).String(), // A's loopback server, at A's address
		"127.0.0.1:9000", // B's own loopback
		netip.AddrPortFrom(a.Addr(), 9001).String(), // A's wildcard server
	} {
		if _, err := dialFrom(b.NSPath(), target, refusedTimeout); err == nil {
			t.Errorf("slot B reached %s in slot A", target)
		}
	}

	// A sandbox that could change its routes (it cannot: no CAP_NET_ADMIN)
	// and send A's traffic through the host is stopped there too. TCP
	// would fail anyway (A's reply goes straight to B, which port
	// isolation drops), so this uses one-way UDP.
	var h *netlink.Handle
	if err := inNS(b.NSPath(), func() (err error) {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, err := h.LinkByName(peerName)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNet(a.Addr(), 32), Gw: m.Gateway().AsSlice()}); err != nil {
		t.Fatal(err)
	}
	var pc net.PacketConn
	if err := inNS(a.NSPath(), func() (err error) {
		pc, err = net.ListenPacket("udp", "0.0.0.0:9002")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	target := netip.AddrPortFrom(a.Addr(), 9002).String()
	if err := sendUDP("", target); err != nil { // control: the host reaches A
		t.Fatal(err)
	}
	if _, err := recvUDP(pc); err != nil {
		t.Fatalf("control: host -> A over UDP: %v", err)
	}
	if err := sendUDP(b.NSPath(), target); err != nil {
		t.Fatal(err)
	}
	if from, err := recvUDP(pc); err == nil {
		t.Errorf("slot A received a datagram from %s routed through the host", from)
	}
}

func sendUDP(nsPath, addr string) error {
	return inNS(nsPath, func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	})
}

func recvUDP(pc net.PacketConn) (net.Addr, error) {
	pc.SetReadDeadline(time.Now().Add(refusedTimeout))
	var buf [16]byte
	_, from, err := pc.ReadFrom(buf[:])
	return from, err
}

func TestSharedPortAllocation(t *testing.T) {
	base := 20000 + int(hex4(t)[0])%8*1000 // a range other test runs are unlikely to use at once
	m := newTestManager(t, func(c *Config) {
		c.Slots = 2
		c.HostPorts = PortRange{Min: base, Max: base + 1}
	})
	ctx := testContext(t)

	a := attach(t, m, ModeShared, PortSpec{ContainerPort: 8080})
	b := attach(t, m, ModeShared, PortSpec{ContainerPort: 8080})
	if a.NSPath() == b.NSPath() {
		t.Fatal("two attachments publishing container port 8080 share a slot")
	}
	if a.Ports()[0].Host == b.Ports()[0].Host {
		t.Fatal("two attachments got the same host port")
	}
	if _, err := m.Attach(ctx, ModeShared, []PortSpec{{ContainerPort: 8080}}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("third 8080 with two slots: %v, want ErrExhausted", err)
	}
	// Another container port fits in a used slot; udp/8080 is another port.
	c := attach(t, m, ModeShared, PortSpec{Proto: "udp", ContainerPort: 8080})
	if _, err := m.Attach(ctx, ModeShared, []PortSpec{{ContainerPort: 8081}}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("tcp host ports %d-%d used up: %v, want ErrExhausted", base, base+1, err)
	}
	rulesBefore := len(dnatRules(t, m))

	// Bad requests change nothing.
	taken := a.Ports()[0].Host.Port()
	for name, specs := range map[string][]PortSpec{
		"published host port": {{ContainerPort: 9000, HostPort: int(taken)}},
		"host port too high":  {{ContainerPort: 9000, HostPort: 65536}},
		"container port zero": {{ContainerPort: 0}},
		"not a host address":  {{ContainerPort: 9000, HostPort: base + 100, HostIP: netip.MustParseAddr("10.199.199.199")}},
		"ports in none mode":  nil,
	} {
		mode := ModeShared
		if specs == nil {
			mode, specs = ModeNone, []PortSpec{{ContainerPort: 9000}}
		}
		if _, err := m.Attach(ctx, mode, specs); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if n := len(dnatRules(t, m)); n != rulesBefore {
		t.Errorf("bad requests changed the DNAT rules: %d, were %d", n, rulesBefore)
	}
	if len(m.hostPorts) != 3 {
		t.Errorf("bad requests changed the host port reservations: %v", m.hostPorts)
	}

	// A host port held by another process on the host is refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	if _, err := m.Attach(ctx, ModeShared, []PortSpec{{ContainerPort: 9000, HostPort: busy}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("host port in use by another process: %v, want ErrInvalid", err)
	}

	// Released ports come back once their rules are gone.
	for _, x := range []*Attachment{a, b, c} {
		if err := x.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	attach(t, m, ModeShared, PortSpec{ContainerPort: 8080})
}

func TestNewRefuses(t *testing.T) {
	testutil.RequiresRoot(t)
	out := newOutside(t)
	ctx := testContext(t)
	forward := readForward(t)

	outLink := ""
	if r, err := netlink.RouteGet(out.addr.AsSlice()); err == nil && len(r) > 0 {
		if l, err := netlink.LinkByIndex(r[0].LinkIndex); err == nil {
			outLink = l.Attrs().Name
		}
	}
	if outLink == "" {
		t.Fatal("cannot find the outside link")
	}
	// Each case is checked for debris with its own, unused subnet: the
	// overlapping one has the outside link's address in it.
	for name, edit := range map[string]func(*Config){
		"subnet overlaps a route":  func(c *Config) { c.Subnet = netip.PrefixFrom(out.addr, 24).Masked() },
		"bridge is a foreign link": func(c *Config) { c.Bridge = outLink },
		"invalid config":           func(c *Config) { c.Slots = -3 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t)
			bad := cfg
			edit(&bad)
			m, err := New(ctx, bad)
			if !errors.Is(err, ErrInvalid) {
				if m != nil {
					m.Close(ctx)
				}
				t.Fatalf("New: %v, want ErrInvalid", err)
			}
			if bad.Bridge == outLink {
				if _, err := netlink.LinkByName(outLink); err != nil {
					t.Fatalf("the foreign link is gone: %v", err)
				}
			} else {
				assertNoDebris(t, Config{Bridge: bad.Bridge, Subnet: cfg.Subnet, ChainPrefix: bad.ChainPrefix, StateDir: bad.StateDir}, forward)
			}
		})
	}

	t.Run("state dir in use", func(t *testing.T) {
		m := newTestManager(t, nil)
		cfg := m.Config()
		cfg.Bridge, cfg.ChainPrefix, cfg.Subnet = "sft"+hex4(t), "SF-T"+hex4(t)+"-", freeSubnet(t, 24)
		if _, err := New(ctx, cfg); !errors.Is(err, ErrBusy) {
			t.Fatalf("second New on one state dir: %v, want ErrBusy", err)
		}
		if err := Cleanup(ctx, m.Config()); !errors.Is(err, ErrBusy) {
			t.Fatalf("Cleanup under a live Manager: %v, want ErrBusy", err)
		}
	})
	t.Run("bridge of another state dir", func(t *testing.T) {
		m := newTestManager(t, nil)
		cfg := testConfig(t)
		cfg.Bridge = m.Config().Bridge
		if _, err := New(ctx, cfg); !errors.Is(err, ErrBusy) {
			t.Fatalf("New on another Manager's bridge: %v, want ErrBusy", err)
		}
		if _, err := netlink.LinkByName(cfg.Bridge); err != nil {
			t.Fatalf("the live Manager's bridge is gone: %v", err)
		}
	})
}

func TestCloseRemovesLiveAttachments(t *testing.T) {
	testutil.RequiresRoot(t)
	cfg := testConfig(t)
	cfg.Egress = true
	forward := readForward(t)
	ctx := testContext(t)
	m, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var as []*Attachment
	for _, mode := range []Mode{ModeShared, ModeIsolated, ModeNone, ModeHost} {
		var ports []PortSpec
		if mode == ModeShared || mode == ModeIsolated {
			ports = []PortSpec{{ContainerPort: 80}}
		}
		as = append(as, attach(t, m, mode, ports...))
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoDebris(t, cfg, forward)
	if err := m.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := m.Attach(ctx, ModeShared, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Attach after Close: %v, want ErrClosed", err)
	}
	for _, a := range as {
		if err := a.Release(ctx); err != nil {
			t.Errorf("Release after Close: %v", err)
		}
	}
}

// crashEnv carries a configuration to TestCrashHelper in a child process.
const crashEnv = "SOCKFAAS_NETNS_CRASH"

// TestCrashHelper is not a test: run by TestCleanupAfterCrash in a child
// process, it sets up a Manager with attachments and exits without Close.
func TestCrashHelper(t *testing.T) {
	spec := os.Getenv(crashEnv)
	if spec == "" {
		t.Skip("helper process for TestCleanupAfterCrash")
	}
	f := strings.Split(spec, ",")
	cfg := Config{Bridge: f[0], Subnet: netip.MustParsePrefix(f[1]), ChainPrefix: f[2], StateDir: f[3], Egress: true, Slots: 2, NonePool: 2}
	ctx := context.Background()
	m, err := New(ctx, cfg)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for _, mode := range []Mode{ModeShared, ModeIsolated, ModeNone} {
		var ports []PortSpec
		if mode != ModeNone {
			ports = []PortSpec{{ContainerPort: 80}}
		}
		if _, err := m.Attach(ctx, mode, ports); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
	}
	fmt.Println("ready")
	os.Exit(0) // a crash, as far as the network is concerned
}

func TestCleanupAfterCrash(t *testing.T) {
	testutil.RequiresRoot(t)
	forward := readForward(t)
	crash := func(t *testing.T, cfg Config) {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+strings.Join([]string{cfg.Bridge, cfg.Subnet.String(), cfg.ChainPrefix, cfg.StateDir}, ","))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "ready") {
			t.Fatalf("crash helper: %v\n%s", err, out)
		}
		// It did leave things behind.
		if _, err := netlink.LinkByName(cfg.Bridge); err != nil {
			t.Fatalf("no bridge after the crash: %v", err)
		}
		if _, err := netlink.LinkByName(isolatedLinkName(cfg.Bridge, firstIsolated(cfg))); err != nil {
			t.Fatalf("no isolated veth after the crash: %v", err)
		}
		if len(testutil.MountsUnder(cfg.StateDir)) < 5 {
			t.Fatalf("namespace mounts after the crash: %v", testutil.MountsUnder(cfg.StateDir))
		}
		if out, _ := exec.Command("iptables", "-t", "nat", "-S").Output(); !strings.Contains(string(out), cfg.ChainPrefix+"DNAT") {
			t.Fatal("no DNAT chain after the crash")
		}
	}

	t.Run("Cleanup", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Slots, cfg.NonePool = 2, 2
		crash(t, cfg)
		if err := Cleanup(testContext(t), cfg); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		assertNoDebris(t, cfg, forward)
		if _, err := os.Stat(filepath.Join(cfg.StateDir, lockName)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("lock file left: %v", err)
		}
	})
	t.Run("New", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Slots, cfg.NonePool = 2, 2
		crash(t, cfg)
		ctx := testContext(t)
		m, err := New(ctx, cfg)
		if err != nil {
			t.Fatalf("New after a crash: %v", err)
		}
		a := attach(t, m, ModeIsolated, PortSpec{ContainerPort: 80})
		if a.Addr() != m.hostAddr(firstIsolated(cfg)) {
			t.Errorf("isolated address %s after cleanup, want the first one again", a.Addr())
		}
		if err := m.Close(ctx); err != nil {
			t.Fatal(err)
		}
		assertNoDebris(t, cfg, forward)
	})
}

func TestConcurrentAttach(t *testing.T) {
	m := newTestManager(t, func(c *Config) { c.Slots = 3; c.NonePool = 2 })
	ctx := testContext(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 4 {
		wg.Go(func() {
			for i := range 10 {
				mode := []Mode{ModeShared, ModeNone, ModeShared, ModeHost}[(w+i)%4]
				var ports []PortSpec
				if mode == ModeShared && i%5 == 0 {
					ports = []PortSpec{{ContainerPort: 7000 + 10*w + i}}
				}
				a, err := m.Attach(ctx, mode, ports)
				if err != nil {
					errs <- fmt.Errorf("worker %d: attach %s: %w", w, mode, err)
					return
				}
				if err := a.Release(ctx); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := m.Settle(ctx); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, s := range m.slots {
		if s.users != 0 || len(s.ports) != 0 {
			t.Errorf("slot %d after all releases: %d users, ports %v", i, s.users, s.ports)
		}
	}
	if len(m.hostPorts) != 0 {
		t.Errorf("host ports after all releases: %v", m.hostPorts)
	}
}

// TestSandboxCannotReachHostServices: a host service listening on all
// addresses (the host's network namespace, so also the gateway address) is
// not reachable from a shared slot, with or without egress; a published
// port still works, since replies to connections the host opened pass.
func TestSandboxCannotReachHostServices(t *testing.T) {
	m := newTestManager(t, func(c *Config) { c.Egress = true })
	l, err := net.Listen("tcp", "0.0.0.0:0") // a host service
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, c.RemoteAddr())
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	a := attach(t, m, ModeShared, PortSpec{ContainerPort: 8080})
	target := netip.AddrPortFrom(m.Gateway(), uint16(port)).String()
	if seen, err := dialFrom(a.NSPath(), target, 500*time.Millisecond); err == nil {
		t.Fatalf("sandbox reached the host service at %s (seen as %s)", target, seen)
	}
	// The published port, from host loopback to a server in the slot.
	serveIn(t, a.NSPath(), netip.AddrPortFrom(a.Addr(), 8080).String())
	if _, err := net.DialTimeout("tcp", a.Ports()[0].Host.String(), dialTimeout); err != nil {
		t.Fatalf("published port from the host: %v", err)
	}
}
