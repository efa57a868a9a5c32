package libct

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/cgroups"
	devices "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/sandbox"
)

// Defaults for the options.
const (
	DefaultStateDir     = "/run/sockfaas/libct"
	DefaultCgroupParent = "/sockfaas-libct"
)

// Backend creates libcontainer sandboxes. It is safe for concurrent use.
type Backend struct {
	stateDir     string
	cgroupParent string
	log          zerolog.Logger

	lock *stateLock

	mu        sync.Mutex
	closed    bool
	sandboxes map[string]*Sandbox
}

var (
	_ sandbox.Backend = (*Backend)(nil)
	_ sandbox.Sandbox = (*Sandbox)(nil)
	_ sandbox.Process = (*Process)(nil)
)

// Option configures a Backend.
type Option func(*Backend)

// WithStateDir sets the directory holding libcontainer's state (the record
// Cleanup reads after a crash), the sandboxes' root and scratch directories
// and the generated /etc. Default DefaultStateDir. Only one backend may use a
// state directory at a time.
func WithStateDir(dir string) Option { return func(b *Backend) { b.stateDir = dir } }

// WithLogger sets the logger for the backend and, process-wide, for
// libcontainer's logrus messages (see the package documentation).
func WithLogger(l zerolog.Logger) Option { return func(b *Backend) { b.log = l } }

// WithCgroupParent sets the absolute cgroup under which each sandbox gets
// <parent>/<id>, in every hierarchy. Default DefaultCgroupParent. A relative
// parent would resolve against this process's own cgroup, which differs per
// controller on some hosts; it is made absolute.
func WithCgroupParent(p string) Option { return func(b *Backend) { b.cgroupParent = p } }

// New makes a backend. It first runs Cleanup on the state directory, so that
// sandboxes a crashed predecessor left behind are removed; it fails with
// sandbox.ErrBusy when another live backend owns the state directory.
func New(ctx context.Context, opts ...Option) (*Backend, error) {
	b := &Backend{
		stateDir:     DefaultStateDir,
		cgroupParent: DefaultCgroupParent,
		log:          zerolog.Nop(),
		sandboxes:    map[string]*Sandbox{},
	}
	for _, o := range opts {
		o(b)
	}
	if b.stateDir == "" || !filepath.IsAbs(b.stateDir) {
		return nil, fmt.Errorf("state directory %q is not absolute: %w", b.stateDir, sandbox.ErrInvalid)
	}
	b.cgroupParent = path.Clean("/" + b.cgroupParent)
	routeLogrus(b.log)

	lk, err := lockState(b.stateDir)
	if err != nil {
		return nil, err
	}
	// runc refuses a rootfs whose path has a symlink in it (/var/run -> /run).
	if b.stateDir, err = filepath.EvalSymlinks(b.stateDir); err != nil {
		lk.release()
		return nil, err
	}
	if err := b.setup(ctx); err != nil {
		lk.release()
		return nil, err
	}
	b.lock = lk
	b.log.Info().Str("state", b.stateDir).Str("cgroup", b.cgroupParent).Msg("libct backend ready")
	return b, nil
}

func (b *Backend) setup(ctx context.Context) error {
	if err := cleanupLocked(ctx, b.stateDir, b.log); err != nil {
		return fmt.Errorf("clean up state directory %s: %w", b.stateDir, err)
	}
	for _, d := range []string{containersDir, recordsDir, rootfsDir, scratchDir} {
		if err := os.MkdirAll(filepath.Join(b.stateDir, d), 0o711); err != nil {
			return err
		}
	}
	if err := writeEtc(filepath.Join(b.stateDir, etcDir)); err != nil {
		return fmt.Errorf("generate /etc: %w", err)
	}
	parents, err := cgroupPaths(b.cgroupParent)
	if err != nil {
		return fmt.Errorf("cgroup parent %s: %w", b.cgroupParent, err)
	}
	return writeJSON(filepath.Join(b.stateDir, backendFile), backendRecord{CgroupParents: cgroupDirs(parents)})
}

// cgroupPaths computes, without creating anything, the directories of the
// absolute cgroup path p in each hierarchy, as libcontainer will use them.
func cgroupPaths(p string) (map[string]string, error) {
	cm, err := manager.New(&cgroups.Cgroup{Path: p, Resources: &cgroups.Resources{}})
	if err != nil {
		return nil, err
	}
	return cm.GetPaths(), nil
}

// Name implements sandbox.Backend.
func (b *Backend) Name() string { return "libcontainer" }

// Create implements sandbox.Backend. The sandbox gets its cgroups at once;
// its namespaces come with the first Start.
//
// Every sandbox gets all the namespaces this backend knows (mount, PID, IPC,
// UTS, network with loopback only, and cgroup where available) whatever
// spec.Namespaces asks: this is the full-isolation backend.
func (b *Backend) Create(ctx context.Context, id string, spec sandbox.Spec) (_ sandbox.Sandbox, retErr error) {
	start := time.Now()
	if err := sandbox.ValidateID(id); err != nil {
		return nil, err
	}
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("create %q: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("create %q: backend closed: %w", id, sandbox.ErrState)
	}
	if _, ok := b.sandboxes[id]; ok {
		b.mu.Unlock()
		return nil, fmt.Errorf("create %q: %w", id, sandbox.ErrExists)
	}
	s := &Sandbox{b: b, id: id}
	// Reserve the id while we build. A Close meanwhile finds the sandbox
	// and destroys it once it is built (or finds nothing built).
	s.mu.Lock()
	defer s.mu.Unlock()
	b.sandboxes[id] = s
	b.mu.Unlock()

	var undo []func() error
	defer func() {
		if retErr == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			if err := undo[i](); err != nil {
				b.log.Warn().Err(err).Str("sandbox", id).Msg("undo half-built sandbox")
			}
		}
		s.c, s.dead, s.destroyed = nil, true, true
		b.mu.Lock()
		delete(b.sandboxes, id)
		b.mu.Unlock()
	}()

	cgPath := path.Join(b.cgroupParent, id)
	paths, err := cgroupPaths(cgPath)
	if err != nil {
		return nil, fmt.Errorf("create %q: cgroup %s: %w", id, cgPath, err)
	}
	rec := record{
		ID:      id,
		Cgroups: paths,
		Rootfs:  filepath.Join(b.stateDir, rootfsDir, id),
		Scratch: filepath.Join(b.stateDir, scratchDir, id),
	}
	recFile := filepath.Join(b.stateDir, recordsDir, id+".json")
	if _, err := os.Lstat(recFile); err == nil {
		return nil, fmt.Errorf("create %q: a record of it is in %s: %w", id, b.stateDir, sandbox.ErrExists)
	}
	plan, err := planRoot(spec.Root, rec.Rootfs, filepath.Join(b.stateDir, etcDir), rec.Scratch)
	if err != nil {
		return nil, fmt.Errorf("create %q: %w", id, err)
	}

	// From here on, everything made is undone on failure; the record comes
	// first so that a crash half-way leaves something Cleanup can follow.
	if err := writeJSON(recFile, rec); err != nil {
		return nil, fmt.Errorf("create %q: record: %w", id, err)
	}
	undo = append(undo, func() error { return os.Remove(recFile) })
	undo = append(undo, func() error { return removeSandboxFiles(rec) })
	if err := os.Mkdir(rec.Scratch, 0o755); err != nil {
		return nil, fmt.Errorf("create %q: scratch: %w", id, err)
	}
	if err := os.Chown(rec.Scratch, int(sandbox.DefaultUser.UID), int(sandbox.DefaultUser.GID)); err != nil {
		return nil, fmt.Errorf("create %q: scratch: %w", id, err)
	}
	if err := plan.create(); err != nil {
		return nil, fmt.Errorf("create %q: root: %w", id, err)
	}

	cfg := b.containerConfig(id, spec, plan, cgPath)
	c, err := libcontainer.Create(filepath.Join(b.stateDir, containersDir), id, cfg)
	if err != nil {
		return nil, fmt.Errorf("create %q: %w", id, mapError(err))
	}
	undo = append(undo, c.Destroy)

	s.c, s.cfg, s.plan, s.rec, s.recFile, s.paths = c, cfg, plan, rec, recFile, paths
	// Make the cgroups now rather than at the first Start, so that the
	// sandbox has its limits, Stats and Info from the beginning, and so that
	// the OOM baseline is real.
	if err := s.makeCgroups(); err != nil {
		return nil, fmt.Errorf("create %q: cgroup %s: %w", id, cgPath, err)
	}
	b.log.Debug().Str("sandbox", id).Str("cgroup", cgPath).Dur("dur", time.Since(start)).Msg("sandbox created")
	return s, nil
}

// containerConfig is the libcontainer configuration of a sandbox.
func (b *Backend) containerConfig(id string, spec sandbox.Spec, plan *rootPlan, cgPath string) *configs.Config {
	hostname := spec.Hostname
	if hostname == "" {
		hostname = id
	}
	// Full isolation: every namespace, whatever spec.Namespaces says; the
	// network is a private loopback-only one unless spec.NetNS names one
	// to join.
	ns := configs.Namespaces{
		{Type: configs.NEWNS}, {Type: configs.NEWPID}, {Type: configs.NEWIPC},
		{Type: configs.NEWUTS}, {Type: configs.NEWNET, Path: spec.NetNS},
	}
	networks := []*configs.Network{{Type: "loopback"}}
	if spec.NetNS != "" {
		networks = nil
	}
	if configs.IsNamespaceSupported(configs.NEWCGROUP) {
		ns = append(ns, configs.Namespace{Type: configs.NEWCGROUP})
	}
	res := &cgroups.Resources{Devices: deviceRules()}
	if m := spec.Limits.MemoryBytes; m > 0 {
		res.Memory = m
		if hasSwapAccounting() {
			res.MemorySwap = m // no swap beyond the memory limit
		}
	}
	if c := spec.Limits.CPUMillis; c > 0 {
		res.CpuPeriod = cpuPeriod
		res.CpuQuota = max(c*cpuPeriod/1000, 1000) // the kernel's minimum quota is 1 ms
	}
	if p := spec.Limits.Pids; p > 0 {
		res.PidsLimit = &p
	}
	return &configs.Config{
		Rootfs:     plan.dir,
		Readonlyfs: true,
		Mounts:     plan.mounts,
		Devices:    sandboxDevices,
		Hostname:   hostname,
		Namespaces: ns,
		Networks:   networks,
		Cgroups:    &cgroups.Cgroup{Path: cgPath, Resources: res},
		// No capabilities at all, in any set.
		Capabilities:    &configs.Capabilities{},
		NoNewPrivileges: true,
		MaskPaths: []string{
			"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
			"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
			"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
		},
		ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
	}
}

const cpuPeriod = 100_000 // µs

var (
	swapOnce sync.Once
	swapOK   bool
)

// hasSwapAccounting reports whether cgroup v1 memory.memsw.* files exist;
// without them libcontainer cannot set a memory+swap limit.
func hasSwapAccounting() bool {
	swapOnce.Do(func() {
		if cgroups.IsCgroup2UnifiedMode() {
			swapOK = true // memory.swap.max
			return
		}
		_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
		swapOK = err == nil
	})
	return swapOK
}

// The device nodes a sandbox's /dev gets, as fsbind describes it.
var sandboxDevices = func() []*devices.Device {
	node := func(p string, major, minor int64) *devices.Device {
		return &devices.Device{
			Path: p, FileMode: 0o666,
			Rule: devices.Rule{Type: devices.CharDevice, Major: major, Minor: minor, Permissions: "rwm", Allow: true},
		}
	}
	return []*devices.Device{
		node("/dev/null", 1, 3), node("/dev/zero", 1, 5), node("/dev/full", 1, 7),
		node("/dev/random", 1, 8), node("/dev/urandom", 1, 9), node("/dev/tty", 5, 0),
	}
}()

// deviceRules is the device cgroup's allow-list: deny everything, then the
// nodes above and the sandbox's own pseudo-terminals.
func deviceRules() []*devices.Rule {
	rules := []*devices.Rule{{Type: devices.WildcardDevice, Major: devices.Wildcard, Minor: devices.Wildcard, Permissions: "rwm", Allow: false}}
	for _, d := range sandboxDevices {
		r := d.Rule
		rules = append(rules, &r)
	}
	return append(rules,
		&devices.Rule{Type: devices.CharDevice, Major: 5, Minor: 2, Permissions: "rwm", Allow: true},                  // /dev/pts/ptmx
		&devices.Rule{Type: devices.CharDevice, Major: 136, Minor: devices.Wildcard, Permissions: "rwm", Allow: true}, // /dev/pts/*
	)
}

// Close destroys every sandbox the backend holds, removes what the backend
// made in its state directory and releases the directory. After Close,
// Create fails with sandbox.ErrState. Close is idempotent.
func (b *Backend) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	live := make([]*Sandbox, 0, len(b.sandboxes))
	for _, s := range b.sandboxes {
		live = append(live, s)
	}
	b.mu.Unlock()

	var errs []error
	for _, s := range live {
		if err := s.Destroy(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		// Leaves only the lock file; also picks up anything a failed
		// Destroy left (with its records).
		errs = append(errs, cleanupLocked(ctx, b.stateDir, b.log))
	}
	if errors.Join(errs...) == nil {
		b.lock.removeDir(b.stateDir)
	} else {
		b.lock.release()
	}
	b.log.Info().Str("state", b.stateDir).Int("destroyed", len(live)).Msg("libct backend closed")
	return errors.Join(errs...)
}

// abandon drops the backend's claim on its state directory without
// destroying anything, as a crash would. Tests use it to exercise Cleanup.
func (b *Backend) abandon() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.lock.release()
}

// mapError translates libcontainer's errors into the sandbox vocabulary.
func mapError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, libcontainer.ErrExist):
		return fmt.Errorf("%w: %w", sandbox.ErrExists, err)
	case errors.Is(err, libcontainer.ErrInvalidID):
		return fmt.Errorf("%w: %w", sandbox.ErrInvalid, err)
	case errors.Is(err, libcontainer.ErrNotExist):
		return fmt.Errorf("%w: %w", sandbox.ErrNotFound, err)
	case errors.Is(err, libcontainer.ErrNotRunning), errors.Is(err, libcontainer.ErrNotPaused),
		errors.Is(err, libcontainer.ErrPaused), errors.Is(err, libcontainer.ErrRunning):
		return fmt.Errorf("%w: %w", sandbox.ErrState, err)
	}
	return err
}
