package lean

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/internal/statedir"
	"github.com/sockfaas/sockfaas/pool"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/cgpool"
	"github.com/sockfaas/sockfaas/sandbox/internal/sbinit"
)

var _ sandbox.Backend = (*Backend)(nil)

// Backend is the lean SOCK-style sandbox backend. Create one with New and
// Close it when done; Close leaves no mount, cgroup, process or state file
// behind.
type Backend struct {
	cfg      config
	log      zerolog.Logger
	layout   cgpool.Layout
	lock     *os.File
	roots    *fsbind.Builder
	cgroups  *cgpool.Pool
	launcher *sbinit.Launcher

	parked  *pool.Generic[parked] // WithParked; nil without
	parkSeq atomic.Uint64         // names parked roots

	mu       sync.Mutex
	live     map[string]*Sandbox // includes IDs being created (nil value)
	closed   bool
	creating sync.WaitGroup // Creates in flight; Close waits for them
}

// rootSpares is how many roots of the default Spec the builder keeps ready,
// built in the background: most sandboxes use it, and a Create then costs
// a rename instead of a dozen mounts.
const rootSpares = 2

func (c config) rootsDir() string { return filepath.Join(c.stateDir, "roots") }

// New takes ownership of the state directory (ErrBusy when another live
// process holds it), removes whatever a crashed owner left, and pre-creates
// the cgroup pool.
func New(ctx context.Context, opts ...Option) (_ *Backend, err error) {
	cfg := defaults()
	for _, o := range opts {
		o(&cfg)
	}
	if !filepath.IsAbs(cfg.stateDir) || !filepath.IsAbs(cfg.cgroup) {
		return nil, fmt.Errorf("state dir %q and cgroup name %q must be absolute: %w", cfg.stateDir, cfg.cgroup, sandbox.ErrInvalid)
	}
	b := &Backend{cfg: cfg, log: cfg.log.With().Str("backend", "lean").Logger(), live: map[string]*Sandbox{}}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	if b.lock, err = lockStateDir(cfg.stateDir); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = b.lock.Close() })

	if cfg.layout != nil {
		b.layout = *cfg.layout
	} else if b.layout, err = cgpool.Detect(); err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	if err := cleanup(ctx, cfg, b.layout, b.log); err != nil {
		return nil, err
	}
	if b.launcher, err = sbinit.NewLauncher(); err != nil {
		return nil, fmt.Errorf("sandbox init helper: %w", err)
	}
	undo = append(undo, func() { _ = b.launcher.Close() })
	if b.roots, err = fsbind.NewBuilder(ctx, cfg.rootsDir(), fsbind.WithLogger(b.log), fsbind.WithSpares(rootSpares)); err != nil {
		return nil, fmt.Errorf("root builder: %w", err)
	}
	undo = append(undo, func() { _ = b.roots.Close(context.Background()) })
	if b.cgroups, err = cgpool.New(ctx, cgpool.Config{Name: cfg.cgroup, Size: cfg.poolSize, Layout: &b.layout, Logger: b.log}); err != nil {
		return nil, fmt.Errorf("cgroup pool: %w", cgpoolError(err))
	}
	undo = append(undo, func() { _ = b.cgroups.Close(context.Background()) })
	if err := b.startParking(); err != nil {
		return nil, fmt.Errorf("parking: %w", err)
	}
	b.log.Info().Str("state", cfg.stateDir).Str("cgroup", cfg.cgroup).Int("pool", cfg.poolSize).
		Str("cgroups", b.layout.Version.String()).Msg("lean backend ready")
	return b, nil
}

// lockStateDir takes ownership of dir; the kernel drops the lock when the
// owner dies, which is how a later process knows the state is a crashed
// owner's and may be cleaned.
func lockStateDir(dir string) (*os.File, error) {
	f, err := statedir.Lock(dir)
	if errors.Is(err, statedir.ErrLocked) {
		return nil, fmt.Errorf("%w: %w", sandbox.ErrBusy, err)
	}
	return f, err
}

// Cleanup removes what a crashed owner of stateDir left: it kills every
// process in the cgroup pool named cgroupName, removes those cgroups,
// detaches every root's mounts and deletes the records. It refuses with
// ErrBusy while a live process owns stateDir. New runs it itself.
func Cleanup(ctx context.Context, stateDir, cgroupName string, log zerolog.Logger) error {
	cfg := defaults()
	cfg.stateDir, cfg.cgroup = stateDir, cgroupName
	lock, err := lockStateDir(stateDir)
	if err != nil {
		return err
	}
	defer func() { _ = lock.Close() }()
	layout, err := cgpool.Detect()
	if err != nil {
		return fmt.Errorf("detect cgroups: %w", err)
	}
	if err := cleanup(ctx, cfg, layout, log); err != nil {
		return err
	}
	return removeStateDir(stateDir)
}

func cleanup(ctx context.Context, cfg config, layout cgpool.Layout, log zerolog.Logger) error {
	dirs, _ := filepath.Glob(filepath.Join(cfg.rootsDir(), "*"))
	for _, dir := range dirs {
		if r, ok := readRecord(dir); ok {
			log.Warn().Str("sandbox", filepath.Base(dir)).Str("cgroup", r.Cgroup).Time("created", r.Created).Msg("removing sandbox left by a crashed process")
		}
	}
	// Processes first: once the cgroups are empty nothing holds the roots.
	if err := cgpool.Cleanup(ctx, layout, cfg.cgroup); err != nil {
		return fmt.Errorf("clean up cgroups: %w", cgpoolError(err))
	}
	if err := fsbind.Cleanup(ctx, cfg.rootsDir()); err != nil {
		return fmt.Errorf("clean up roots: %w", err)
	}
	return nil
}

// removeStateDir removes the lock file and the directory itself, leaving
// the directory alone if something else lives in it.
func removeStateDir(dir string) error {
	_ = os.Remove(filepath.Join(dir, statedir.LockName))
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("remove state dir: %w", err)
	}
	return nil
}

// Name implements sandbox.Backend.
func (b *Backend) Name() string { return "lean" }

// CgroupVersion says which cgroup layout the pool uses.
func (b *Backend) CgroupVersion() cgpool.Version { return b.layout.Version }

// Create implements sandbox.Backend. The result is a *Sandbox.
func (b *Backend) Create(ctx context.Context, id string, spec sandbox.Spec) (sandbox.Sandbox, error) {
	s, err := b.create(ctx, id, spec)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (b *Backend) create(ctx context.Context, id string, spec sandbox.Spec) (_ *Sandbox, err error) {
	if err := sandbox.ValidateID(id); err != nil {
		return nil, err
	}
	if spec.Namespaces == 0 {
		spec.Namespaces = sandbox.DefaultNamespaces
	}
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("create %q: %w", id, err)
	}
	if !spec.Namespaces.Has(sandbox.NSMount) {
		return nil, fmt.Errorf("create %q: the lean backend pivots into its root and needs a mount namespace: %w", id, sandbox.ErrInvalid)
	}
	if spec.Hostname == "" {
		spec.Hostname = id
	}

	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return nil, fmt.Errorf("create %q: backend closed: %w", id, sandbox.ErrState)
	case b.hasLocked(id):
		b.mu.Unlock()
		return nil, fmt.Errorf("create %q: %w", id, sandbox.ErrExists)
	}
	b.live[id] = nil // reserve the ID while we build outside the lock
	b.creating.Add(1)
	b.mu.Unlock()
	defer b.creating.Done()
	defer func() {
		if err != nil {
			b.mu.Lock()
			delete(b.live, id)
			b.mu.Unlock()
		}
	}()

	var p parked
	ok := false
	if parkable(spec) {
		p, ok = b.takeParked(id)
	}
	if ok {
		// The helper is in the cgroup already; only the limits are new.
		if err := b.cgroups.Reset(ctx, p.cg, cgLimits(spec.Limits)); err != nil {
			_ = p.helper.Close()
			_ = releaseRoot(p.root)
			return nil, fmt.Errorf("create %q: %w", id, cgpoolError(err))
		}
	} else {
		if p.root, err = b.roots.Build(ctx, id, spec.Root); err != nil {
			if errors.Is(err, fsbind.ErrInvalid) {
				err = fmt.Errorf("%w: %w", sandbox.ErrInvalid, err)
			}
			return nil, fmt.Errorf("create %q: %w", id, err)
		}
		if p.cg, err = b.cgroups.Get(ctx, cgLimits(spec.Limits)); err != nil {
			_ = p.root.Release()
			return nil, fmt.Errorf("create %q: %w", id, cgpoolError(err))
		}
	}
	if !ok { // a parked one has its record already
		if err := writeRecord(p.root.Dir, record{Cgroup: p.cg.Name(), Created: time.Now()}); err != nil {
			b.discard(p)
			return nil, fmt.Errorf("create %q: %w", id, err)
		}
	}
	s := &Sandbox{b: b, id: id, spec: spec, root: p.root, cg: p.cg, parked: p.helper}
	b.mu.Lock()
	b.live[id] = s
	b.mu.Unlock()
	b.log.Debug().Str("sandbox", id).Str("cgroup", p.cg.Name()).Bool("parked", ok).Msg("created")
	return s, nil
}

func (b *Backend) hasLocked(id string) bool {
	_, ok := b.live[id]
	return ok
}

// releaseRoot removes a sandbox's record and gives its root back to the
// builder (see fsbind.Root.Release).
func releaseRoot(r *fsbind.Root) error {
	removeRecord(r.Dir)
	return r.Release()
}

// forget drops a destroyed sandbox from the live set.
func (b *Backend) forget(id string) {
	b.mu.Lock()
	delete(b.live, id)
	b.mu.Unlock()
}

// Get returns the live sandbox with that ID, or ErrNotFound.
func (b *Backend) Get(id string) (*Sandbox, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.live[id]; s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("sandbox %q: %w", id, sandbox.ErrNotFound)
}

// List returns the live sandboxes.
func (b *Backend) List() []*Sandbox {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*Sandbox, 0, len(b.live))
	for _, s := range b.live {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// Close implements sandbox.Backend.
func (b *Backend) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	// Creates that passed the closed check finish (and publish their
	// sandbox) before anything they use is closed.
	b.creating.Wait()
	b.mu.Lock()
	var live []*Sandbox
	for _, s := range b.live {
		if s != nil {
			live = append(live, s)
		}
	}
	b.mu.Unlock()

	var errs []error
	for _, s := range live {
		if err := s.Destroy(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.stopParked(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stop parking: %w", err))
	}
	if err := b.cgroups.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("close cgroup pool: %w", err))
	}
	if err := b.roots.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("close root builder: %w", err))
	}
	if err := b.launcher.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := removeStateDir(b.cfg.stateDir); err != nil {
		errs = append(errs, err)
	}
	_ = b.lock.Close()
	b.log.Info().Int("destroyed", len(live)).Msg("lean backend closed")
	return errors.Join(errs...)
}

func cgLimits(l sandbox.Limits) cgpool.Limits {
	return cgpool.Limits{MemoryBytes: l.MemoryBytes, CPUMillis: l.CPUMillis, Pids: l.Pids}
}

// cgpoolError adds the sandbox vocabulary to the pool's errors.
func cgpoolError(err error) error {
	switch {
	case errors.Is(err, cgpool.ErrBusy):
		return fmt.Errorf("%w: %w", sandbox.ErrBusy, err)
	case errors.Is(err, cgpool.ErrForeign), errors.Is(err, cgpool.ErrInvalid):
		return fmt.Errorf("%w: %w", sandbox.ErrInvalid, err)
	case errors.Is(err, cgpool.ErrUnsupported):
		return fmt.Errorf("%w: %w", sandbox.ErrUnsupported, err)
	}
	return err
}
