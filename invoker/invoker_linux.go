//go:build linux

package invoker

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/netns"
	"github.com/sockfaas/sockfaas/pool"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/zygote"
)

var _ Service = (*Invoker)(nil)

// teardownTimeout bounds the destruction steps of Close once draining is
// over (or gave up): they run even when Close's ctx has expired, because
// Close promises to leave nothing behind.
const teardownTimeout = 30 * time.Second

// Invoker runs deployed functions: it owns a registry, a lean backend, a
// zygote tree, the generic sandbox and handler caches, an optional network
// manager, the functions' logs and the asynchronous queue, and routes each
// invocation warm → paused → cold (generic sandbox + zygote fork) → fresh
// (a new interpreter). See the package documentation. Its methods are safe
// for concurrent use.
//
// Invariants: every live instance is in live from the moment it is built
// until its Close returns; an instance serves one request at a time (the
// handler cache leases it); Close leaves no process, mount, cgroup or
// network namespace behind.
type Invoker struct {
	cfg        config
	log        zerolog.Logger
	reg        *Registry
	lean       *lean.Backend
	tree       *zygote.Tree
	net        *netns.Manager // nil: no network manager
	generic    *pool.Generic[*lean.Sandbox]
	handlers   *pool.Handlers
	uids       *zygote.UIDPool
	logs       *logs
	async      *asyncQueue
	local      localConfig // the local queue's settings (localqueue.go)
	runtimeDir string

	global  chan struct{} // global concurrency slots
	waiting atomic.Int64  // requests waiting for a slot
	closing chan struct{} // closed when Close begins
	seq     atomic.Uint64 // sandbox IDs

	mu       sync.Mutex
	closed   bool
	live     map[*instance]struct{}
	slots    map[string]chan struct{} // per function key
	retired  map[string]bool          // keys whose instances are closed on release
	inflight sync.WaitGroup

	// noZygote makes every cold start fresh (tests of the fallback).
	noZygote atomic.Bool
}

// New starts an invoker: it opens the registry, cleans up and starts the
// lean backend, the network manager, the zygote tree (root and static
// nodes) and the caches. On error nothing it started is left.
func New(ctx context.Context, opts ...Option) (_ *Invoker, err error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	local := cfg.local
	switch {
	case !filepath.IsAbs(cfg.stateDir):
		return nil, fmt.Errorf("new invoker: %w: state dir %q is not absolute", ErrInvalid, cfg.stateDir)
	case cfg.maxConc < 1:
		return nil, fmt.Errorf("new invoker: %w: max concurrency %d < 1", ErrInvalid, cfg.maxConc)
	case cfg.queue < 0 || cfg.generic < 0 || cfg.asyncQueue < 0:
		return nil, fmt.Errorf("new invoker: %w: negative queue or cache size", ErrInvalid)
	}
	if cfg.memBudget == 0 {
		if total, err := memTotal(); err == nil {
			cfg.memBudget = total / 2
		}
	}
	iv := &Invoker{
		cfg: cfg, log: cfg.log, local: local,
		uids:    zygote.NewUIDPool(zygote.DefaultUIDBase, zygote.DefaultUIDs),
		global:  make(chan struct{}, cfg.maxConc),
		closing: make(chan struct{}),
		live:    map[*instance]struct{}{},
		slots:   map[string]chan struct{}{},
		retired: map[string]bool{},
	}
	// Undo in reverse order on failure: nothing half-built survives.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	bg := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), teardownTimeout)
	}

	if err := os.MkdirAll(cfg.stateDir, 0o711); err != nil {
		return nil, fmt.Errorf("new invoker: state dir: %w", err)
	}
	iv.runtimeDir = filepath.Join(cfg.stateDir, "runtime")
	if err := zygote.WriteRuntime(iv.runtimeDir); err != nil {
		return nil, fmt.Errorf("new invoker: write runtime: %w", err)
	}
	// Instances run as unprivileged uids and read the runtime.
	if err := os.Chmod(iv.runtimeDir, 0o755); err != nil {
		return nil, fmt.Errorf("new invoker: %w", err)
	}
	undo = append(undo, func() { _ = os.RemoveAll(iv.runtimeDir) })

	regOpts := append([]RegistryOption{WithRegistryLogger(cfg.log)}, cfg.registryOpts...)
	if iv.reg, err = OpenRegistry(ctx, cfg.registryDir, regOpts...); err != nil {
		return nil, fmt.Errorf("new invoker: %w", err)
	}
	undo = append(undo, func() { _ = iv.reg.Close() })

	if iv.lean, err = lean.New(ctx,
		lean.WithStateDir(filepath.Join(cfg.stateDir, "lean")),
		lean.WithCgroupName(cfg.cgroup),
		lean.WithPoolSize(max(lean.DefaultPoolSize, cfg.generic+8)),
		// Every function sandbox has a code mount point, so none is of
		// the default root a parked helper waits in.
		lean.WithParked(0),
		lean.WithLogger(cfg.log)); err != nil {
		return nil, fmt.Errorf("new invoker: lean backend: %w", err)
	}
	undo = append(undo, func() {
		c, cancel := bg()
		defer cancel()
		_ = iv.lean.Close(c)
	})

	if cfg.network != nil {
		nc := *cfg.network
		if nc.StateDir == "" {
			nc.StateDir = filepath.Join(cfg.stateDir, "net")
		}
		if cfg.defaultNetwork {
			nc.Logger = cfg.log
		}
		if iv.net, err = netns.New(ctx, nc); err != nil {
			return nil, fmt.Errorf("new invoker: network: %w", err)
		}
		undo = append(undo, func() {
			c, cancel := bg()
			defer cancel()
			_ = iv.net.Close(c)
		})
	}

	log := cfg.log
	if iv.tree, err = zygote.NewTree(ctx, iv.lean, zygote.TreeConfig{
		Root:   zygote.Config{ID: "z", RuntimeDir: iv.runtimeDir, Logger: &log},
		Static: cfg.zygotes,
		Logger: &log,
	}); err != nil {
		return nil, fmt.Errorf("new invoker: zygotes: %w", err)
	}
	undo = append(undo, func() {
		c, cancel := bg()
		defer cancel()
		_ = iv.tree.Close(c)
	})

	if iv.handlers, err = pool.NewHandlers(pool.HandlersConfig{
		PauseAfter:   cfg.pauseAfter,
		MemoryBudget: cfg.memBudget,
		Logger:       cfg.log,
	}); err != nil {
		return nil, fmt.Errorf("new invoker: handler cache: %w", err)
	}
	undo = append(undo, func() {
		c, cancel := bg()
		defer cancel()
		_ = iv.handlers.Close(c)
	})

	if iv.generic, err = pool.NewGeneric(pool.GenericConfig[*lean.Sandbox]{
		Make:    iv.makeGeneric,
		Destroy: func(ctx context.Context, sb *lean.Sandbox) error { return sb.Destroy(ctx) },
		Target:  cfg.generic,
		Logger:  cfg.log,
	}); err != nil {
		return nil, fmt.Errorf("new invoker: generic cache: %w", err)
	}
	undo = append(undo, func() {
		c, cancel := bg()
		defer cancel()
		_ = iv.generic.Close(c)
	})

	if iv.logs, err = newLogs(filepath.Join(cfg.stateDir, "logs"), DefaultLogMaxBytes, cfg.log); err != nil {
		return nil, fmt.Errorf("new invoker: %w", err)
	}
	undo = append(undo, func() {
		iv.logs.close()
		_ = os.RemoveAll(iv.logs.dir)
	})
	iv.async = newAsyncQueue(iv.Invoke, cfg.asyncWorkers, cfg.asyncQueue, cfg.log)
	iv.async.setRetry(local.retry, local.deadLetters)
	// Last: from here on the upstream may deliver work.
	if err := local.upstream.Attach(ctx, host{iv}); err != nil {
		c, cancel := bg()
		defer cancel()
		_ = iv.async.close(c)
		return nil, fmt.Errorf("new invoker: attach upstream: %w", err)
	}

	iv.log.Info().Str("state", cfg.stateDir).Str("registry", iv.reg.Dir()).Str("cgroup", cfg.cgroup).
		Int("functions", iv.reg.count()).Bool("network", iv.net != nil).Msg("invoker ready")
	return iv, nil
}

// memTotal reads MemTotal from /proc/meminfo.
func memTotal() (uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no MemTotal in /proc/meminfo")
}

// Registry is the invoker's function registry.
func (iv *Invoker) Registry() *Registry { return iv.reg }

// Close stops taking calls, waits for those in flight (and the running
// asynchronous ones) until ctx is done, then destroys every instance,
// cached sandbox and zygote, the network, the lean backend's state and the
// functions' logs, whatever ctx says: nothing is left behind. Queued asynchronous calls
// that have not started fail with ErrClosed. Close is idempotent.
func (iv *Invoker) Close(ctx context.Context) error {
	iv.mu.Lock()
	if iv.closed {
		iv.mu.Unlock()
		return nil
	}
	iv.closed = true
	close(iv.closing)
	iv.mu.Unlock()
	start := time.Now()

	var errs []error
	// No more deliveries from the upstream; what it delivered may finish.
	if err := iv.local.upstream.Detach(ctx); err != nil {
		errs = append(errs, fmt.Errorf("detach upstream: %w", err))
	}
	if err := iv.async.close(ctx); err != nil {
		errs = append(errs, err)
	}
	drained := make(chan struct{})
	go func() { iv.inflight.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("drain in-flight invocations: %w", ctx.Err()))
	}

	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
	defer cancel()
	// Close whatever is still leased too: its caller gets an error.
	hctx, hcancel := context.WithTimeout(tctx, time.Second)
	if err := iv.handlers.Close(hctx); err != nil && hctx.Err() == nil {
		errs = append(errs, err)
	}
	hcancel()
	iv.mu.Lock()
	left := make([]*instance, 0, len(iv.live))
	for inst := range iv.live {
		left = append(left, inst)
	}
	iv.mu.Unlock()
	for _, inst := range left {
		if err := inst.Close(tctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := iv.generic.Close(tctx); err != nil {
		errs = append(errs, err)
	}
	if err := iv.tree.Close(tctx); err != nil {
		errs = append(errs, fmt.Errorf("close zygotes: %w", err))
	}
	if iv.net != nil {
		if err := iv.net.Close(tctx); err != nil {
			errs = append(errs, fmt.Errorf("close network: %w", err))
		}
	}
	if err := iv.lean.Close(tctx); err != nil {
		errs = append(errs, fmt.Errorf("close lean backend: %w", err))
	}
	iv.logs.close()
	// The logs go with the run: they live under the state directory
	// (normally a tmpfs), which is left as it was found when empty.
	for _, dir := range []string{iv.runtimeDir, iv.logs.dir} {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	_ = os.Remove(iv.cfg.stateDir) // only when empty
	if err := iv.reg.Close(); err != nil {
		errs = append(errs, err)
	}
	iv.log.Info().Dur("dur", time.Since(start)).Msg("invoker closed")
	return errors.Join(errs...)
}

// enter registers an invocation that Close waits for.
func (iv *Invoker) enter() error {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if iv.closed {
		return ErrClosed
	}
	iv.inflight.Add(1)
	return nil
}

// Deploy implements Service: it adds a version to the registry; idle
// instances of the older versions are closed at once, busy ones when their
// call ends.
func (iv *Invoker) Deploy(ctx context.Context, name string, src Source) (*Function, error) {
	if err := iv.enter(); err != nil {
		return nil, fmt.Errorf("deploy %q: %w", name, err)
	}
	defer iv.inflight.Done()
	fn, err := iv.reg.Deploy(ctx, name, src)
	if err != nil {
		return nil, err
	}
	iv.retire(ctx, name, fnKey(fn), false)
	iv.servedChanged(ctx)
	iv.log.Info().Str("func", name).Int("version", fn.Version).Msg("deployed")
	return fn, nil
}

// Functions implements Service.
func (iv *Invoker) Functions() []*Function { return iv.reg.List() }

// Function implements Service.
func (iv *Invoker) Function(name string) (*Function, error) { return iv.reg.Get(name) }

// Remove implements Service: it removes every version of name from the
// registry, then closes its instances: idle and paused ones before it
// returns (bounded by ctx), busy ones when their call ends.
func (iv *Invoker) Remove(ctx context.Context, name string) error {
	if err := iv.enter(); err != nil {
		return fmt.Errorf("remove %q: %w", name, err)
	}
	defer iv.inflight.Done()
	if err := iv.reg.Remove(ctx, name); err != nil {
		return err
	}
	iv.retire(ctx, name, "", true)
	iv.servedChanged(ctx)
	iv.logs.drop(name)
	iv.log.Info().Str("func", name).Msg("removed")
	return nil
}

// retire closes the instances of name's versions other than keep: it marks
// their keys retired (busy instances are closed on release) and takes the
// idle and paused ones out of the handler cache; with wait it waits for
// their closes, bounded by ctx.
func (iv *Invoker) retire(ctx context.Context, name, keep string, wait bool) {
	keys := map[string]bool{}
	iv.mu.Lock()
	for inst := range iv.live {
		if inst.fn.Name == name && inst.key != keep {
			keys[inst.key] = true
			iv.retired[inst.key] = true
		}
	}
	for key := range iv.slots {
		if strings.HasPrefix(key, name+"@") && key != keep {
			delete(iv.slots, key)
		}
	}
	iv.mu.Unlock()
	var closing []*instance
	for key := range keys {
		for {
			lease, err := iv.handlers.Acquire(ctx, key)
			if err != nil {
				break
			}
			closing = append(closing, lease.Instance().(*instance))
			lease.Release(false)
		}
	}
	if !wait {
		return
	}
	for _, inst := range closing {
		select {
		case <-inst.closed:
		case <-ctx.Done():
			return
		}
	}
}

func (iv *Invoker) isRetired(key string) bool {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	return iv.retired[key]
}

// forget drops a closed instance from the bookkeeping.
func (iv *Invoker) forget(inst *instance) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	delete(iv.live, inst)
	if iv.retired[inst.key] {
		for other := range iv.live {
			if other.key == inst.key {
				return
			}
		}
		delete(iv.retired, inst.key)
	}
}

// AsyncResult implements Service. Once done, an error is the invocation's
// (ErrTimeout, ErrFunctionCrashed, ...), not the lookup's.
func (iv *Invoker) AsyncResult(id string) (*Result, bool, error) { return iv.async.result(id) }

// Status implements Service. Instance memory is read from each instance's
// cgroup now; zygote memory is the tree's last measurement.
func (iv *Invoker) Status() Status {
	st := Status{Functions: iv.reg.count()}
	iv.mu.Lock()
	insts := make([]*instance, 0, len(iv.live))
	for inst := range iv.live {
		insts = append(insts, inst)
	}
	iv.mu.Unlock()
	ctx := context.Background()
	for _, inst := range insts {
		is := InstanceStatus{
			Function: inst.fn.Name, Version: inst.fn.Version, ID: inst.id, Pid: inst.pid,
			State: inst.stateName(), Started: inst.started, Invocations: inst.invocations.Load(),
		}
		if m, err := inst.MemoryBytes(ctx); err == nil {
			is.MemoryBytes = m
		}
		st.MemoryBytes += is.MemoryBytes
		st.Instances = append(st.Instances, is)
	}
	slices.SortStableFunc(st.Instances, compareInstances)
	for _, n := range iv.tree.Nodes() {
		zs := ZygoteStatus{ID: n.ID, Packages: n.Packages, Parent: n.Parent, Forks: n.Forks}
		if n.Memory > 0 {
			zs.MemoryBytes = uint64(n.Memory)
		}
		st.MemoryBytes += zs.MemoryBytes
		st.Zygotes = append(st.Zygotes, zs)
	}
	st.GenericCached = iv.generic.Stats().Ready
	st.Evictions = iv.handlers.Stats().Evictions
	return st
}

// compareInstances orders instances by function, version and start time.
func compareInstances(a, b InstanceStatus) int {
	if c := strings.Compare(a.Function, b.Function); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Version, b.Version); c != 0 {
		return c
	}
	return a.Started.Compare(b.Started)
}

// Logs implements Service: the end of name's log, up to max bytes (the
// current file and, when that is shorter, the rotated one before it). A
// removed function's logs stay readable until Close.
func (iv *Invoker) Logs(name string, max int) ([]byte, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	b, err := iv.logs.tail(name, max)
	if errors.Is(err, ErrNotFound) {
		if _, gerr := iv.reg.Get(name); gerr == nil {
			return []byte{}, nil // deployed, never ran
		}
	}
	return b, err
}
