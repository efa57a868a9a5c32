package cgpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/internal/mountinfo"
	"github.com/sockfaas/sockfaas/internal/statedir"
)

// Detect reads the cgroup layout of the calling thread's mount namespace
// (see mountinfo.Path for why the thread's).
func Detect() (Layout, error) {
	f, err := os.Open(mountinfo.Path)
	if err != nil {
		return Layout{}, fmt.Errorf("detect cgroup layout: %w", err)
	}
	defer f.Close()
	l, err := parseLayout(f)
	if err != nil {
		return Layout{}, fmt.Errorf("detect cgroup layout: %w", err)
	}
	return l, nil
}

// Pool hands out empty cgroups with limits applied and takes them back. It
// is safe for concurrent use.
type Pool struct {
	log    zerolog.Logger
	layout Layout
	name   string
	drain  time.Duration
	v2     bool
	tree   tree // the parent, for Close
	// mounts[i] is the mount directory of the hierarchy whose copy of the
	// parent is tree.dirs[i].
	mounts []string
	// ctrl[c] indexes tree.dirs for controller c; -1 when unavailable. On
	// v2, cpuacct stands for the core cpu.stat and freezer for the core
	// cgroup.freeze.
	ctrl    [numCtrl]int
	hasKill bool // v2 cgroup.kill
	// created are the ancestors of the parent New had to make, deepest
	// first; Close removes them again when nothing else uses them.
	created []string

	mu     sync.Mutex
	free   []*Cgroup // LIFO: the most recently used cgroup is the warmest
	all    map[*Cgroup]struct{}
	next   int
	closed bool
	owner  *os.File // the name's lock, held until Close
}

// LockDir holds one lock file per pool name: the kernel drops a lock when
// its owner dies, which tells a live pool's name from a crashed one's.
const LockDir = "/run/lock/sockfaas"

// lockName takes the machine-wide lock of a pool name, or fails with
// ErrBusy: two live pools must never share a name, since each kills
// whatever it finds under its name as a crashed run's debris.
func lockName(name string) (*os.File, error) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, fmt.Errorf("lock directory: %w", err)
	}
	file := "cgroup" + strings.ReplaceAll(name, "/", "%")
	f, err := statedir.LockFile(filepath.Join(LockDir, file))
	if errors.Is(err, statedir.ErrLocked) {
		return nil, fmt.Errorf("cgroup %s: %w", name, ErrBusy)
	}
	return f, err
}

// checkOwned refuses a parent that holds what a pool never makes:
// children not named cg-N, or processes of its own. Such a cgroup belongs
// to someone else (a service, another tool), and killing it would be a
// disaster; the caller picked a wrong name.
func (t tree) checkOwned() error {
	for _, d := range t.dirs {
		entries, err := os.ReadDir(d)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.IsDir() && !isPoolChild(e.Name()) {
				return fmt.Errorf("%s has a child %q: %w", d, e.Name(), ErrForeign)
			}
		}
		if procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil && len(bytes.TrimSpace(procs)) > 0 {
			return fmt.Errorf("%s has processes of its own: %w", d, ErrForeign)
		}
	}
	return nil
}

func isPoolChild(name string) bool {
	n, ok := strings.CutPrefix(name, "cg-")
	if !ok || n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// New creates the parent cgroup cfg.Name in every hierarchy and cfg.Size
// empty children. Whatever a crashed run left under the parent is killed
// and removed first. On v2 it enables the memory, cpu and pids controllers
// for the children where the kernel offers them; limits on the others then
// fail with ErrUnsupported.
func New(ctx context.Context, cfg Config) (*Pool, error) {
	p, err := newPool(cfg)
	if err != nil {
		return nil, fmt.Errorf("new cgroup pool %s: %w", cfg.Name, err)
	}
	size := cfg.Size
	if size == 0 {
		size = defaultSize
	}
	start := time.Now()
	if p.owner, err = lockName(p.name); err != nil {
		return nil, fmt.Errorf("new cgroup pool: %w", err)
	}
	if err := p.tree.checkOwned(); err != nil {
		statedir.Unlock(p.owner)
		return nil, fmt.Errorf("new cgroup pool %s: %w", p.name, err)
	}
	if found, err := p.tree.destroy(ctx); err != nil {
		statedir.Unlock(p.owner)
		return nil, fmt.Errorf("new cgroup pool %s: clean up a previous run: %w", p.name, err)
	} else if found {
		p.log.Info().Str("cgroup", p.name).Msg("removed cgroups left by a previous run")
	}
	if err := p.setup(ctx, size); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.drain)
		defer cancel()
		_, _ = p.tree.destroy(cctx)
		p.removeCreated()
		statedir.Unlock(p.owner)
		return nil, fmt.Errorf("new cgroup pool %s: %w", p.name, err)
	}
	p.log.Info().Str("cgroup", p.name).Str("version", p.layout.Version.String()).
		Strs("controllers", p.Controllers()).Int("size", size).Dur("dur", time.Since(start)).
		Msg("cgroup pool ready")
	return p, nil
}

func newPool(cfg Config) (*Pool, error) {
	if err := checkName(cfg.Name, false); err != nil {
		return nil, err
	}
	if cfg.Size < 0 || cfg.DrainTimeout < 0 {
		return nil, fmt.Errorf("negative size or drain timeout: %w", ErrInvalid)
	}
	var layout Layout
	if cfg.Layout != nil {
		layout = *cfg.Layout
	} else {
		var err error
		if layout, err = Detect(); err != nil {
			return nil, err
		}
	}
	p := &Pool{
		log:    cfg.Logger,
		layout: layout,
		name:   cfg.Name,
		drain:  cfg.DrainTimeout,
		v2:     layout.Version == V2,
		all:    map[*Cgroup]struct{}{},
	}
	if p.drain == 0 {
		p.drain = defaultDrain
	}
	for c := range p.ctrl {
		p.ctrl[c] = -1
	}
	var err error
	if p.tree, err = treeOf(layout, cfg.Name); err != nil {
		return nil, err
	}
	if p.v2 {
		p.mounts = []string{path.Clean(layout.Unified)}
		return p, nil
	}
	p.mounts = make([]string, len(p.tree.dirs))
	for c := 0; c < numCtrl; c++ {
		mnt, ok := layout.Mounts[ctrlName(c)]
		if !ok {
			p.log.Info().Str("cgroup", cfg.Name).Str("controller", ctrlName(c)).
				Msg("cgroup v1 controller not mounted; skipped")
			continue
		}
		d, _ := layout.Path(ctrlName(c), cfg.Name) // treeOf checked it
		i := slices.Index(p.tree.dirs, d)
		p.ctrl[c] = i
		p.mounts[i] = path.Clean(mnt)
	}
	return p, nil
}

// setup makes the parent in every hierarchy (and, on v2, enables the
// controllers down to it), then the first children.
func (p *Pool) setup(ctx context.Context, size int) error {
	want := []string{"memory", "cpu", "pids"}
	for i, dir := range p.tree.dirs {
		levels := []string{p.mounts[i]}
		rel := strings.TrimPrefix(dir, p.mounts[i])
		for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
			levels = append(levels, levels[len(levels)-1]+"/"+part)
		}
		for j, lvl := range levels {
			if j > 0 {
				err := unix.Mkdir(lvl, 0o755)
				switch {
				case err == nil:
					if j < len(levels)-1 {
						p.created = append([]string{lvl}, p.created...)
					}
				case err == unix.EEXIST && j < len(levels)-1:
				default:
					return &os.PathError{Op: "mkdir", Path: lvl, Err: err}
				}
			}
			if p.v2 {
				want = p.enable(lvl, want)
			}
		}
	}
	if p.v2 {
		top := p.tree.dirs[0]
		for _, name := range want {
			switch name {
			case "memory":
				p.ctrl[ctrlMemory] = 0
			case "cpu":
				p.ctrl[ctrlCPU] = 0
			case "pids":
				p.ctrl[ctrlPids] = 0
			}
		}
		if exists(top + "/cpu.stat") {
			p.ctrl[ctrlCPUAcct] = 0
		}
		if exists(top + "/cgroup.freeze") {
			p.ctrl[ctrlFreezer] = 0
		}
		p.hasKill = exists(top + "/cgroup.kill")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for range size {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, err := p.createLocked()
		if err != nil {
			return err
		}
		p.free = append(p.free, c)
	}
	return nil
}

// enable makes the controllers in want available to the children of the v2
// cgroup dir and returns those that are; the rest are logged and dropped.
func (p *Pool) enable(dir string, want []string) []string {
	var a, b [256]byte
	avail, err := readFile(dir+"/cgroup.controllers", a[:0])
	if err != nil {
		p.log.Warn().Err(err).Str("cgroup", p.name).Msg("cannot read available controllers; none enabled")
		return nil
	}
	on, err := readFile(dir+"/cgroup.subtree_control", b[:0])
	if err != nil {
		p.log.Warn().Err(err).Str("cgroup", p.name).Msg("cannot read enabled controllers; none enabled")
		return nil
	}
	availList, onList := strings.Fields(string(avail)), strings.Fields(string(on))
	var kept []string
	for _, c := range want {
		switch {
		case !slices.Contains(availList, c):
			p.log.Info().Str("cgroup", p.name).Str("controller", c).Str("dir", dir).
				Msg("cgroup v2 controller not available; limits on it are unsupported")
		case slices.Contains(onList, c):
			kept = append(kept, c)
		default:
			if err := writeFile(dir+"/cgroup.subtree_control", "+"+c); err != nil {
				p.log.Warn().Err(err).Str("cgroup", p.name).Str("controller", c).
					Msg("cannot enable cgroup v2 controller; limits on it are unsupported")
				continue
			}
			kept = append(kept, c)
		}
	}
	return kept
}

// createLocked makes a new child in every hierarchy. p.mu is held: growth
// is rare and this keeps Close from missing a cgroup being born.
func (p *Pool) createLocked() (*Cgroup, error) {
	c := p.newCgroup(p.name + "/cg-" + strconv.Itoa(p.next))
	p.next++
	for i, d := range c.paths {
		if err := unix.Mkdir(d, 0o755); err != nil {
			for _, made := range c.paths[:i] {
				_ = unix.Rmdir(made)
			}
			return nil, fmt.Errorf("create cgroup %s: %w", c.name, &os.PathError{Op: "mkdir", Path: d, Err: err})
		}
	}
	p.all[c] = struct{}{}
	return c, nil
}

// Get returns an empty cgroup whose limits are l, reusing a free one when
// there is one (writing only the limit files whose value changes) and
// creating one otherwise. It also resets the memory high-water mark and
// takes the OOM-kill counter's baseline. A limit whose controller is not
// available fails with ErrUnsupported. A free cgroup given back with
// PutEmpty is emptied here first (see PutEmpty); one that cannot be is
// dropped and the next one tried.
func (p *Pool) Get(ctx context.Context, l Limits) (*Cgroup, error) {
	if err := p.check(l); err != nil {
		return nil, fmt.Errorf("get cgroup: %w", err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("get cgroup: %w", err)
		}
		c, unchecked, err := p.take()
		if err != nil {
			return nil, fmt.Errorf("get cgroup: %w", err)
		}
		if unchecked {
			if err := p.empty(ctx, c); err != nil {
				continue // dropped; try another
			}
		}
		if err := c.prepare(l); err != nil {
			// Its limit files are in an unknown state now: do not reuse it.
			p.discard(ctx, c, err)
			return nil, fmt.Errorf("get cgroup: %w", err)
		}
		return c, nil
	}
}

// take marks a free cgroup (or a new one) in use and says whether it came
// back through PutEmpty.
func (p *Pool) take() (c *Cgroup, unchecked bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false, ErrClosed
	}
	if n := len(p.free); n > 0 {
		c, p.free = p.free[n-1], p.free[:n-1]
	} else {
		if c, err = p.createLocked(); err != nil {
			return nil, false, err
		}
		p.log.Debug().Str("cgroup", c.name).Msg("cgroup pool grew")
	}
	c.inUse = true
	unchecked, c.unchecked = c.unchecked, false
	return c, unchecked, nil
}

// Reset gives c, a cgroup taken with Get and not yet Put, the limits l as
// Get would have: only what changed is written, the memory peak and the
// OOM kill count start again. A cgroup can thus be taken (and joined)
// ahead of time, before its limits are known. On error c is dropped from
// the pool, as Get drops one it cannot prepare, and must not be used.
func (p *Pool) Reset(ctx context.Context, c *Cgroup, l Limits) error {
	if c == nil || c.pool != p {
		return fmt.Errorf("reset cgroup: not from this pool: %w", ErrInvalid)
	}
	if err := p.check(l); err != nil {
		return fmt.Errorf("reset cgroup: %w", err)
	}
	p.mu.Lock()
	inUse := c.inUse
	p.mu.Unlock()
	if !inUse {
		return fmt.Errorf("reset cgroup %s: not taken: %w", c.name, ErrInvalid)
	}
	if err := c.prepare(l); err != nil {
		p.discard(ctx, c, err)
		return fmt.Errorf("reset cgroup: %w", err)
	}
	return nil
}

func (p *Pool) check(l Limits) error {
	if err := l.validate(); err != nil {
		return err
	}
	if l.CPUMillis > 1<<40 {
		return fmt.Errorf("cpu limit %d millis out of range: %w", l.CPUMillis, ErrInvalid)
	}
	need := func(set bool, c int) error {
		if set && p.ctrl[c] < 0 {
			return fmt.Errorf("%s limit: %s controller unavailable (cgroup %s): %w", ctrlName(c), ctrlName(c), p.layout.Version, ErrUnsupported)
		}
		return nil
	}
	return errors.Join(need(l.MemoryBytes > 0, ctrlMemory), need(l.CPUMillis > 0, ctrlCPU), need(l.Pids > 0, ctrlPids))
}

// Put kills every process in c, waits until it is empty and puts it back
// on the free list. A cgroup that cannot be emptied within the drain
// timeout (or ctx) is dropped from the pool and an error returned; it is
// never handed out again. c must not be used after Put.
func (p *Pool) Put(ctx context.Context, c *Cgroup) error {
	if err := p.release(c); err != nil {
		return err
	}
	if err := p.empty(ctx, c); err != nil {
		return fmt.Errorf("put cgroup %s: %w", c.name, err)
	}
	return p.free1(c, false)
}

// PutEmpty puts c back on the free list without looking inside: for a
// caller that knows nothing is left in it, because every process that
// could be has been reaped (a sandbox whose processes all lived in one
// PID namespace, once that namespace's init is reaped: the kernel kills
// and reaps the rest before the init's exit completes). It saves the
// caller the check, one read of cgroup.procs per v1 hierarchy. The pool
// does not take the caller's word for it: the next Get that takes c kills
// whatever is in it and checks that it is empty first, as Put does, and
// drops c if it cannot be emptied. c must not be used after PutEmpty.
func (p *Pool) PutEmpty(c *Cgroup) error {
	if err := p.release(c); err != nil {
		return err
	}
	return p.free1(c, true)
}

// release marks c, which must be in use, no longer in use: from here no
// second Put gets in, and Get cannot see it yet.
func (p *Pool) release(c *Cgroup) error {
	if c == nil || c.pool != p {
		return fmt.Errorf("put cgroup: not from this pool: %w", ErrInvalid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !c.inUse {
		return fmt.Errorf("put cgroup %s: not in use: %w", c.name, ErrInvalid)
	}
	c.inUse = false
	if p.closed {
		return fmt.Errorf("put cgroup %s: %w", c.name, ErrClosed)
	}
	return nil
}

// empty kills every process in c, which nobody else holds, and waits until
// it is empty; a cgroup that cannot be emptied within the drain timeout
// (or ctx) is dropped from the pool.
func (p *Pool) empty(ctx context.Context, c *Cgroup) error {
	dctx, cancel := context.WithTimeout(ctx, p.drain)
	defer cancel()
	if err := c.Kill(dctx); err != nil {
		p.discard(ctx, c, err)
		return fmt.Errorf("cannot empty it, dropped from the pool: %w", err)
	}
	return nil
}

// free1 appends c to the free list.
func (p *Pool) free1(c *Cgroup, unchecked bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("put cgroup %s: %w", c.name, ErrClosed)
	}
	c.unchecked = unchecked
	p.free = append(p.free, c)
	return nil
}

// discard drops c from the pool and tries to remove it; if it is still
// busy, Close removes it with the rest of the tree.
func (p *Pool) discard(ctx context.Context, c *Cgroup, why error) {
	p.mu.Lock()
	delete(p.all, c)
	p.mu.Unlock()
	c.closeFiles()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 100*time.Millisecond)
	defer cancel()
	var errs []error
	for _, d := range c.paths {
		if err := rmdir(rctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	p.log.Warn().Err(why).AnErr("rmdir", errors.Join(errs...)).Str("cgroup", c.name).
		Msg("cgroup dropped from the pool")
}

// Close kills every process in the pool's cgroups, in use or not, and
// removes the children, the parent and the ancestors New created, in every
// hierarchy. After Close, Get and Put return ErrClosed. A second Close does
// nothing.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	all := make([]*Cgroup, 0, len(p.all))
	for c := range p.all {
		all = append(all, c)
	}
	p.all, p.free = nil, nil
	p.mu.Unlock()

	start := time.Now()
	for _, c := range all {
		c.closeFiles()
	}
	ctx, cancel := withDefaultTimeout(ctx, p.drain)
	defer cancel()
	_, err := p.tree.destroy(ctx)
	p.removeCreated()
	statedir.Unlock(p.owner)
	if err != nil {
		return fmt.Errorf("close cgroup pool %s: %w", p.name, err)
	}
	p.log.Info().Str("cgroup", p.name).Dur("dur", time.Since(start)).Msg("cgroup pool closed")
	return nil
}

// removeCreated removes the ancestors New made, unless something else has
// appeared in them since.
func (p *Pool) removeCreated() {
	for _, d := range p.created {
		if err := unix.Rmdir(d); err != nil && err != unix.ENOENT {
			p.log.Debug().Err(err).Str("dir", d).Msg("ancestor cgroup kept")
		}
	}
}

// Name is the parent's absolute cgroup path.
func (p *Pool) Name() string { return p.name }

// Layout is the cgroup layout the pool works on.
func (p *Pool) Layout() Layout { return p.layout }

// Controllers lists what limits and stats can use, among memory, cpu,
// cpuacct, pids and freezer. On v2, cpuacct and freezer stand for the core
// files cpu.stat and cgroup.freeze.
func (p *Pool) Controllers() []string {
	var out []string
	for c, i := range p.ctrl {
		if i >= 0 {
			out = append(out, ctrlName(c))
		}
	}
	return out
}

// Cleanup is crash recovery: it kills every process under the cgroup name
// (at any depth, in every hierarchy of layout) and removes the cgroups
// bottom-up. Nothing there is not an error. Without a deadline on ctx it
// gives up after 5s.
func Cleanup(ctx context.Context, layout Layout, name string) error {
	if err := checkName(name, false); err != nil {
		return fmt.Errorf("clean up cgroup %s: %w", name, err)
	}
	t, err := treeOf(layout, name)
	if err != nil {
		return fmt.Errorf("clean up cgroup %s: %w", name, err)
	}
	lock, err := lockName(name)
	if err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	defer statedir.Unlock(lock)
	if err := t.checkOwned(); err != nil {
		return fmt.Errorf("clean up cgroup %s: %w", name, err)
	}
	ctx, cancel := withDefaultTimeout(ctx, defaultDrain)
	defer cancel()
	if _, err := t.destroy(ctx); err != nil {
		return fmt.Errorf("clean up cgroup %s: %w", name, err)
	}
	return nil
}

func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
