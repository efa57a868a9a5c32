package netns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/rs/zerolog"
	"github.com/sockfaas/sockfaas/internal/statedir"
	"golang.org/x/sys/unix"
)

// Manager owns the bridge, the namespaces and the chains of one Config, and
// hands out Attachments. It is safe for concurrent use.
//
// Invariants:
//   - Exactly one live Manager per state directory (a flock on its "lock"
//     file); New refuses a second one with ErrBusy.
//   - Attach never creates or deletes a namespace, link or iptables rule for
//     ModeShared without published ports or for ModeNone (while the pool
//     lasts); such an Attach is a few map updates under a mutex.
//   - Two attachments in one slot never publish the same container port;
//     no host port is published twice.
//   - Release never waits for a deletion: rules, links and namespaces go in
//     the background, and what they held (host ports, container ports,
//     addresses) is only reused once they are gone.
//   - After Close nothing of the Manager is left on the host, and Attach
//     returns ErrClosed.
type Manager struct {
	cfg         Config
	log         zerolog.Logger
	ipt         *iptables.IPTables
	chains      chainSet
	lock        *os.File
	nsDir       string
	gateway     netip.Addr
	bridgeIndex int
	noneSeq     atomic.Uint64

	mu        sync.Mutex
	closed    bool
	slots     []*slot
	rr        int             // where the next slot search starts, to spread ties
	nonePool  []string        // ready ModeNone namespace files
	hostsUsed map[uint32]bool // isolated sandboxes' addresses, as offsets into the subnet
	nextHost  uint32
	hostPorts map[portKey]int // published host port -> the socket holding it
	nextPort  int
	busy      int           // attaches doing I/O and teardowns still running
	idle      chan struct{} // closed when busy drops to 0

	refill     chan struct{}
	stop       chan struct{}
	refillDone chan struct{}
}

// slot is one pre-built shared namespace.
type slot struct {
	nsPath string
	addr   netip.Addr
	users  int              // live attachments
	ports  map[portKey]bool // container ports published in this namespace
}

func (s *slot) fits(specs []PortSpec) bool {
	for _, p := range specs {
		if s.ports[portKey{p.Proto, p.ContainerPort}] {
			return false
		}
	}
	return true
}

// New removes what an earlier run with the same configuration left behind
// (see Cleanup), then builds the bridge, the chains, the slots and the
// ModeNone pool. A configuration that fails Validate, a bridge name taken by
// a link sockfaas did not make, or a subnet that overlaps a route is refused
// with ErrInvalid before anything is changed. On any error nothing is left
// behind.
func New(ctx context.Context, cfg Config) (_ *Manager, err error) {
	start := time.Now()
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkHost(cfg); err != nil {
		return nil, err
	}
	lock, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			unlockStateDir(lock)
		}
	}()
	ipt, err := newIPTables()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With().Str("bridge", cfg.Bridge).Logger()
	if err := cleanup(cfg, ipt, log); err != nil {
		return nil, fmt.Errorf("remove leftovers of an earlier run: %w", err)
	}

	m := &Manager{
		cfg:        cfg,
		log:        log,
		ipt:        ipt,
		chains:     chainsFor(cfg.ChainPrefix),
		lock:       lock,
		nsDir:      filepath.Join(cfg.StateDir, "ns"),
		gateway:    cfg.Subnet.Addr().Next(),
		hostsUsed:  make(map[uint32]bool),
		nextHost:   firstIsolated(cfg),
		hostPorts:  make(map[portKey]int),
		nextPort:   cfg.HostPorts.Min,
		refill:     make(chan struct{}, 1),
		stop:       make(chan struct{}),
		refillDone: make(chan struct{}),
	}
	if err := m.setup(ctx); err != nil {
		if cerr := cleanup(cfg, ipt, log); cerr != nil {
			log.Error().Err(cerr).Msg("undo partial network setup")
		}
		return nil, err
	}
	go m.refillLoop()
	log.Info().Str("subnet", cfg.Subnet.String()).Int("slots", cfg.Slots).Int("none_pool", cfg.NonePool).
		Bool("egress", cfg.Egress).Dur("dur", time.Since(start)).Msg("network ready")
	return m, nil
}

// setup builds everything; it runs after cleanup, but each step would also
// accept finding its result already there.
func (m *Manager) setup(ctx context.Context) error {
	if err := ensureNSDir(m.nsDir); err != nil {
		return err
	}
	br, err := makeBridge(m.cfg, m.gateway)
	if err != nil {
		return err
	}
	m.bridgeIndex = br.Attrs().Index
	if m.cfg.Egress {
		if err := enableForwarding(br, m.cfg.StateDir, m.log); err != nil {
			return err
		}
	} else {
		m.log.Info().Msg("egress disabled: sandboxes reach only the host; net.ipv4.ip_forward left as it is")
	}
	if err := installChains(m.ipt, m.cfg); err != nil {
		return err
	}
	for i := range m.cfg.Slots {
		if err := ctx.Err(); err != nil {
			return err
		}
		s := &slot{
			nsPath: filepath.Join(m.nsDir, "slot-"+strconv.Itoa(i)),
			addr:   m.hostAddr(uint32(2 + i)),
			ports:  make(map[portKey]bool),
		}
		if err := m.plumb(s.nsPath, slotLinkName(m.cfg.Bridge, i), s.addr); err != nil {
			return fmt.Errorf("build slot %d: %w", i, err)
		}
		m.slots = append(m.slots, s)
	}
	for range m.cfg.NonePool {
		path, err := m.newNone()
		if err != nil {
			return err
		}
		m.nonePool = append(m.nonePool, path)
	}
	return nil
}

// Config is the configuration in force, defaults filled in.
func (m *Manager) Config() Config { return m.cfg }

// Gateway is the bridge's address: the sandboxes' default route, the host as
// sandboxes see it, and the source address sandboxes see for clients on the
// host's loopback.
func (m *Manager) Gateway() netip.Addr { return m.gateway }

// Attach gives a sandbox its network in mode ("" means Config.DefaultMode)
// and publishes ports (ModeShared and ModeIsolated only). The sandbox must
// join NSPath before it runs user code. Errors wrap ErrInvalid for a bad
// request, ErrExhausted when nothing is free to serve it, ErrClosed after
// Close; on error nothing is left reserved.
//
// Costs: ModeHost, and ModeShared without ports, take microseconds. ModeNone
// takes microseconds while the pool lasts, ~1 ms when it runs dry. ModeIsolated
// builds a namespace and a veth pair (~2 ms). Each published port adds one
// iptables call (~2 ms, ~15 ms while background rule deletions run).
func (m *Manager) Attach(ctx context.Context, mode Mode, ports []PortSpec) (*Attachment, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if mode == "" {
		mode = m.cfg.DefaultMode
	}
	if _, err := ParseMode(string(mode)); err != nil {
		return nil, err
	}
	specs, err := normalizePorts(ports)
	if err != nil {
		return nil, err
	}
	if len(specs) > 0 && (mode == ModeHost || mode == ModeNone) {
		return nil, fmt.Errorf("mode %s cannot publish ports: %w", mode, ErrInvalid)
	}
	var a *Attachment
	switch mode {
	case ModeHost:
		a, err = m.attachHost()
	case ModeNone:
		a, err = m.attachNone()
	case ModeShared:
		a, err = m.attachShared(specs)
	case ModeIsolated:
		a, err = m.attachIsolated(specs)
	}
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", mode, err)
	}
	if e := m.log.Debug(); e.Enabled() {
		e.Str("mode", string(mode)).Str("ns", a.nsPath).Str("addr", a.addr.String()).Int("ports", len(a.ports)).Msg("attached")
	}
	return a, nil
}

func (m *Manager) attachHost() (*Attachment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	return &Attachment{mode: ModeHost}, nil
}

func (m *Manager) attachNone() (*Attachment, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	var path string
	if n := len(m.nonePool); n > 0 {
		path = m.nonePool[n-1]
		m.nonePool = m.nonePool[:n-1]
	} else {
		m.beginWork()
	}
	m.mu.Unlock()
	select {
	case m.refill <- struct{}{}:
	default:
	}
	if path == "" {
		if m.cfg.NonePool > 0 {
			m.log.Warn().Msg("none pool empty: creating a namespace on the caller's path (raise Config.NonePool)")
		}
		var err error
		path, err = m.newNone()
		m.endWork()
		if err != nil {
			return nil, err
		}
	}
	return &Attachment{m: m, mode: ModeNone, nsPath: path}, nil
}

func (m *Manager) attachShared(specs []PortSpec) (*Attachment, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	s := m.pickSlot(specs)
	if s == nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("every slot already publishes one of the container ports %v: %w", containerPorts(specs), ErrExhausted)
	}
	pubs, err := m.reservePorts(specs, s.addr)
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	s.users++
	for _, p := range pubs {
		s.ports[portKey{p.Proto, int(p.Sandbox.Port())}] = true
	}
	a := &Attachment{m: m, mode: ModeShared, nsPath: s.nsPath, addr: s.addr, ports: pubs, slot: s}
	if len(pubs) == 0 {
		m.mu.Unlock()
		return a, nil
	}
	m.beginWork()
	m.mu.Unlock()
	defer m.endWork()
	if err := m.publish(a); err != nil {
		return nil, err
	}
	return a, nil
}

// pickSlot returns the least used slot that has none of the specs'
// container ports published, or nil. Called with m.mu held.
func (m *Manager) pickSlot(specs []PortSpec) *slot {
	var best *slot
	n := len(m.slots)
	for i := range n {
		s := m.slots[(m.rr+i)%n]
		if (best == nil || s.users < best.users) && s.fits(specs) {
			best = s
		}
	}
	m.rr = (m.rr + 1) % n
	return best
}

func (m *Manager) attachIsolated(specs []PortSpec) (*Attachment, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	host, err := m.allocHost()
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	addr := m.hostAddr(host)
	pubs, err := m.reservePorts(specs, addr)
	if err != nil {
		delete(m.hostsUsed, host)
		m.mu.Unlock()
		return nil, err
	}
	m.beginWork()
	m.mu.Unlock()
	defer m.endWork()

	a := &Attachment{m: m, mode: ModeIsolated, addr: addr, ports: pubs, host: host,
		nsPath: filepath.Join(m.nsDir, "iso-"+strconv.FormatUint(uint64(host), 10))}
	if err := m.plumb(a.nsPath, isolatedLinkName(m.cfg.Bridge, host), addr); err != nil {
		m.mu.Lock()
		m.freePorts(pubs)
		delete(m.hostsUsed, host)
		m.mu.Unlock()
		return nil, err
	}
	if err := m.publish(a); err != nil {
		return nil, err
	}
	return a, nil
}

// publish adds a's DNAT rules. On error it undoes a entirely.
func (m *Manager) publish(a *Attachment) error {
	for _, p := range a.ports {
		if err := m.ipt.Append("nat", m.chains.dnat, dnatRule(p)...); err != nil {
			m.releaseNow(a)
			return fmt.Errorf("publish %s %s -> %s: %w", p.Proto, p.Host, p.Sandbox, err)
		}
		a.published++
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed { // Close's cleanup removes what a made
		return ErrClosed
	}
	return nil
}

// firstIsolated is the subnet offset of the first address for ModeIsolated.
func firstIsolated(cfg Config) uint32 { return uint32(2 + cfg.Slots) }

// allocHost takes a free address offset for an isolated sandbox, going round
// the subnet so that a just-freed address is reused last. Called with m.mu
// held.
func (m *Manager) allocHost() (uint32, error) {
	first := firstIsolated(m.cfg)
	last := uint32(1)<<(32-m.cfg.Subnet.Bits()) - 2
	n := last - first + 1
	for i := range n {
		h := first + (m.nextHost-first+i)%n
		if !m.hostsUsed[h] {
			m.hostsUsed[h] = true
			m.nextHost = h + 1
			return h, nil
		}
	}
	return 0, fmt.Errorf("no free address in %s: %w", m.cfg.Subnet, ErrExhausted)
}

func (m *Manager) hostAddr(offset uint32) netip.Addr {
	b := m.cfg.Subnet.Addr().As4()
	binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+offset)
	return netip.AddrFrom4(b)
}

func (m *Manager) newNone() (string, error) {
	path := filepath.Join(m.nsDir, "none-"+strconv.FormatUint(m.noneSeq.Add(1), 10))
	h, err := createNS(path)
	if err != nil {
		return "", err
	}
	h.Close()
	return path, nil
}

// refillLoop keeps the ModeNone pool full, off the callers' path.
func (m *Manager) refillLoop() {
	defer close(m.refillDone)
	for {
		select {
		case <-m.stop:
			return
		case <-m.refill:
		}
		for {
			m.mu.Lock()
			need := !m.closed && len(m.nonePool) < m.cfg.NonePool
			m.mu.Unlock()
			if !need {
				break
			}
			path, err := m.newNone()
			if err != nil {
				m.log.Error().Err(err).Msg("refill none pool")
				break // try again on the next Attach
			}
			m.mu.Lock()
			m.nonePool = append(m.nonePool, path)
			m.mu.Unlock()
		}
	}
}

// beginWork and endWork count work that runs outside m.mu and must finish
// before Close removes everything. Called with m.mu held (beginWork) or
// not (endWork).
func (m *Manager) beginWork() {
	if m.busy == 0 {
		m.idle = make(chan struct{})
	}
	m.busy++
}

func (m *Manager) endWork() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.busy--
	if m.busy == 0 {
		close(m.idle)
	}
}

// Settle waits until the background teardowns of released attachments have
// finished (and with them, the rules, links and namespaces they held).
func (m *Manager) Settle(ctx context.Context) error {
	m.mu.Lock()
	if m.busy == 0 {
		m.mu.Unlock()
		return nil
	}
	idle := m.idle
	m.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close tears down everything the Manager made: it waits for background work
// (bounded by ctx), then removes the chains with all their rules, the links,
// the namespaces and the state directory's contents, and restores
// ip_forward. Attachments still live lose their network; their Release
// becomes a no-op. Close is idempotent.
func (m *Manager) Close(ctx context.Context) error {
	start := time.Now()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.stop)
	m.mu.Unlock()

	var errs []error
	select {
	case <-m.refillDone:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("wait for the none pool refill: %w", ctx.Err()))
	}
	if err := m.Settle(ctx); err != nil {
		errs = append(errs, fmt.Errorf("wait for teardowns: %w", err))
	}
	// Clean up even when waiting timed out: what is still in flight fails
	// harmlessly against missing chains and links.
	errs = append(errs, cleanup(m.cfg, m.ipt, m.log))
	m.mu.Lock()
	for k, fd := range m.hostPorts {
		unix.Close(fd)
		delete(m.hostPorts, k)
	}
	m.nonePool = nil
	m.mu.Unlock()
	unlockStateDir(m.lock)
	err := errors.Join(errs...)
	if err != nil {
		m.log.Error().Err(err).Msg("network teardown")
		return err
	}
	m.log.Info().Dur("dur", time.Since(start)).Msg("network removed")
	return nil
}

// Cleanup removes what a Manager with cfg left on the host when its process
// died without Close: the chains and the jumps to them, the bridge and its
// veths, the namespace files, and ip_forward if that Manager turned it on.
// It fails with ErrBusy while a live Manager owns cfg.StateDir. New runs it
// first.
func Cleanup(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := ownBridge(cfg); err != nil {
		return err
	}
	lock, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return err
	}
	defer unlockStateDir(lock)
	ipt, err := newIPTables()
	if err != nil {
		return err
	}
	return cleanup(cfg, ipt, cfg.Logger.With().Str("bridge", cfg.Bridge).Logger())
}

// cleanup is the one teardown path, for Close, Cleanup and a failed New. It
// finds everything by name (and link alias), so it needs no record of what
// was made; it goes on past errors and reports them all. Each step is
// bounded by netlink and iptables timeouts.
func cleanup(cfg Config, ipt *iptables.IPTables, log zerolog.Logger) error {
	return errors.Join(
		restoreForwarding(cfg.Bridge, log),
		removeChains(ipt, cfg.ChainPrefix),
		// Unpinning the namespaces first lets the kernel destroy most veth
		// pairs with them; removeLinks deletes whatever is still there.
		removeNSDir(filepath.Join(cfg.StateDir, "ns")),
		removeLinks(cfg.Bridge),
	)
}

const lockName = statedir.LockName

// lockStateDir makes dir if needed and takes its lock, or fails with ErrBusy.
func lockStateDir(dir string) (*os.File, error) {
	f, err := statedir.Lock(dir)
	if errors.Is(err, statedir.ErrLocked) {
		return nil, fmt.Errorf("in use by another sockfaas network manager: %w: %w", ErrBusy, err)
	}
	return f, err
}

// unlockStateDir removes the lock file (and the state directory, if that
// leaves it empty) and releases the lock.
func unlockStateDir(f *os.File) {
	_ = os.Remove(f.Name())
	_ = os.Remove(filepath.Dir(f.Name()))
	f.Close()
}

func containerPorts(specs []PortSpec) []string {
	out := make([]string, 0, len(specs))
	for _, p := range specs {
		out = append(out, p.Proto+"/"+strconv.Itoa(p.ContainerPort))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Attachment is one sandbox's network. Its methods are safe for concurrent
// use.
type Attachment struct {
	m         *Manager // nil for ModeHost
	mode      Mode
	nsPath    string
	addr      netip.Addr
	ports     []PublishedPort
	published int    // how many of ports have their DNAT rule
	slot      *slot  // ModeShared
	host      uint32 // ModeIsolated: addr as an offset into the subnet
	released  atomic.Bool
}

// Mode is the attachment's network mode.
func (a *Attachment) Mode() Mode { return a.mode }

// NSPath is the nsfs file of the namespace the sandbox must join (open it
// and setns(fd, CLONE_NEWNET)), or "" for ModeHost. It stays valid until
// Release. Attachments to one slot share it.
func (a *Attachment) NSPath() string { return a.nsPath }

// Addr is the sandbox's address on the bridge (ModeShared, ModeIsolated), or
// the zero Addr.
func (a *Attachment) Addr() netip.Addr { return a.addr }

// Ports are the published ports, in the order requested.
func (a *Attachment) Ports() []PublishedPort { return slices.Clone(a.ports) }

// Release gives the network back once the sandbox's processes are gone. It
// returns at once: DNAT rules, ModeIsolated links and namespaces, and
// ModeNone namespaces (used once) are removed in the background; Settle
// waits for that. The host ports, container ports and address the
// attachment held are free again only then, so an Attach right after a
// Release may find them taken (ErrExhausted, ErrInvalid for an explicit
// host port). Release is idempotent and a no-op after Close.
func (a *Attachment) Release(ctx context.Context) error {
	m := a.m
	if m == nil || !a.released.CompareAndSwap(false, true) {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if a.slot != nil {
		a.slot.users--
	}
	if m.closed || (a.mode == ModeShared && len(a.ports) == 0) {
		return nil
	}
	m.beginWork()
	go func() {
		defer m.endWork()
		m.teardown(a)
	}()
	return nil
}

// releaseNow undoes a failed attachment on the caller's path.
func (m *Manager) releaseNow(a *Attachment) {
	a.released.Store(true)
	if a.slot != nil {
		m.mu.Lock()
		a.slot.users--
		m.mu.Unlock()
	}
	m.teardown(a)
}

// teardown removes what a holds, then frees its ports and address for
// reuse.
func (m *Manager) teardown(a *Attachment) {
	var errs []error
	for _, p := range a.ports[:a.published] {
		if err := m.ipt.Delete("nat", m.chains.dnat, dnatRule(p)...); err != nil {
			errs = append(errs, fmt.Errorf("unpublish %s %s: %w", p.Proto, p.Host, err))
		}
	}
	if a.mode == ModeIsolated {
		errs = append(errs, deleteLink(isolatedLinkName(m.cfg.Bridge, a.host)))
	}
	if a.mode == ModeIsolated || a.mode == ModeNone {
		errs = append(errs, destroyNS(a.nsPath))
	}
	m.mu.Lock()
	m.freePorts(a.ports)
	if a.slot != nil {
		for _, p := range a.ports {
			delete(a.slot.ports, portKey{p.Proto, int(p.Sandbox.Port())})
		}
	}
	if a.mode == ModeIsolated {
		delete(m.hostsUsed, a.host)
	}
	m.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		m.log.Error().Err(err).Str("mode", string(a.mode)).Str("ns", a.nsPath).Msg("release network")
	}
}
