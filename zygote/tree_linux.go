package zygote

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/sandbox/lean"
)

// Tree is a tree of zygotes keyed by package set, after SOCK, plus
// adaptive growth.
//
// Lookup: Fork forks from the deepest node whose packages (its own and its
// ancestors') are all in the request's requirements, most packages winning;
// the root is the fallback.
//
// Growth: when a requirement set is not exactly some node's set, the tree
// counts the request. Once one set was requested GrowAfter times within
// GrowWindow, the tree has fewer than MaxNodes nodes and the memory budget
// allows another zygote (estimated at the parent's current charge), it
// grows a child of the node that served the request, importing the missing
// packages. Growth runs in the background; requests keep being served by the
// parent meanwhile. A growth that fails (a package that does not import, a
// zygote that does not start) is not retried for IdleTimeout.
//
// Pruning: every CheckInterval the tree measures each zygote's cgroup
// (lean Stats) and removes adaptive leaves idle for IdleTimeout and, while
// the total is over MemoryBudget, adaptive leaves least recently used first.
// The root and Static nodes are never pruned.
//
// Failures: a fork that fails because of its zygote (ErrZygote: dead
// process, refused connection) is retried once on that zygote, restarted;
// a second failure is reported. A fork that fails in the child (a
// *ForkError: a missing program, a handler that does not import) is
// reported at once: a fresh zygote would fail the same way.
type Tree struct {
	be  *lean.Backend
	cfg TreeConfig
	log zerolog.Logger
	now func() time.Time

	mu     sync.Mutex
	pol    *treePolicy
	closed bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// NewTree starts the root zygote and the static nodes on be.
func NewTree(ctx context.Context, be *lean.Backend, cfg TreeConfig) (_ *Tree, err error) {
	if cfg.Root.ID == "" {
		cfg.Root.ID = "zygote"
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.Root.Logger == nil {
		cfg.Root.Logger = cfg.Logger
	}
	t := &Tree{be: be, cfg: cfg, log: zerolog.Nop(), now: time.Now, stop: make(chan struct{})}
	if cfg.Logger != nil {
		t.log = *cfg.Logger
	}
	z, err := Start(ctx, be, cfg.Root)
	if err != nil {
		return nil, err
	}
	root := &treeNode{id: cfg.Root.ID, pkgs: normalize(cfg.Root.Packages), own: cfg.Root.Packages, z: z}
	t.pol = newTreePolicy(cfg, root)
	defer func() {
		if err != nil {
			_ = t.Close(context.Background())
		}
	}()
	for _, set := range cfg.Static {
		reqs := normalize(set)
		parent := t.pol.lookup(reqs)
		n := t.pol.add(parent, reqs, true, t.now())
		z, err := t.start(ctx, n)
		if err != nil {
			t.pol.remove(n)
			return nil, fmt.Errorf("static zygote %v: %w", set, err)
		}
		t.mu.Lock()
		n.z, n.ready = z, true
		t.mu.Unlock()
	}
	t.wg.Add(1)
	go t.maintain()
	return t, nil
}

// start forks n's zygote from its parent's; the caller stores it in n.z
// under the lock.
func (t *Tree) start(ctx context.Context, n *treeNode) (*Zygote, error) {
	limits := t.cfg.Root.Limits
	if t.cfg.ChildLimits != nil {
		limits = *t.cfg.ChildLimits
	}
	z, err := n.parent.z.Child(ctx, t.be, Config{
		ID: n.id, Packages: n.own, Limits: limits, Env: t.cfg.Root.Env,
		ReadyTimeout: t.cfg.Root.ReadyTimeout, Logger: t.cfg.Root.Logger,
	})
	if err != nil {
		return nil, err
	}
	return z, nil
}

// Fork forks req into sb from the deepest zygote whose packages are all in
// requirements (import names), and counts the request for adaptive growth.
func (t *Tree) Fork(ctx context.Context, sb *lean.Sandbox, requirements []string, req ForkRequest) (*Instance, error) {
	reqs := normalize(requirements)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, fmt.Errorf("zygote tree: closed: %w", ErrZygote)
	}
	n := t.pol.lookup(reqs)
	est := int64(0)
	if n.memory > 0 {
		est = n.memory
	}
	plan := t.pol.use(n, reqs, t.now(), t.pol.memoryOK(est))
	z := n.z
	t.mu.Unlock()
	if plan != nil {
		t.wg.Add(1)
		go t.grow(plan)
	}
	inst, err := z.Fork(ctx, sb, req)
	if err == nil || !errors.Is(err, ErrZygote) || ctx.Err() != nil {
		return inst, err
	}
	if z.isClosed() {
		// Pruned under our feet: the next best node serves.
		t.mu.Lock()
		z = t.pol.lookup(reqs).z
		t.mu.Unlock()
	} else {
		t.log.Warn().Str("zygote", z.ID()).Err(err).Msg("fork failed; restarting the zygote and retrying")
		if rerr := z.Restart(ctx); rerr != nil {
			return nil, fmt.Errorf("%w (restart: %v)", err, rerr)
		}
	}
	return z.Fork(ctx, sb, req)
}

// grow grows a node for plan in the background.
func (t *Tree) grow(plan *growPlan) {
	defer t.wg.Done()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	n := t.pol.add(plan.parent, plan.pkgs, false, t.now())
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*DefaultReadyTimeout)
	defer cancel()
	z, err := t.start(ctx, n)
	t.mu.Lock()
	n.z = z
	closed := t.closed
	t.pol.grown(plan, n, err == nil && !closed, t.now())
	t.mu.Unlock()
	if err != nil {
		t.log.Warn().Str("zygote", n.id).Strs("packages", plan.pkgs).Err(err).Msg("growing a zygote failed")
		return
	}
	if closed {
		_ = z.Close(context.Background())
		return
	}
	t.log.Info().Str("zygote", n.id).Str("parent", plan.parent.id).Strs("packages", plan.pkgs).Msg("zygote grown")
}

func (t *Tree) maintain() {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), t.cfg.CheckInterval)
			_ = t.Prune(ctx)
			cancel()
		}
	}
}

// Prune measures every zygote and removes what the policy says (see Tree).
// It runs every CheckInterval by itself.
func (t *Tree) Prune(ctx context.Context) error {
	t.mu.Lock()
	zs := map[*treeNode]*Zygote{}
	for _, n := range t.pol.nodes {
		if n.ready && n.z != nil {
			zs[n] = n.z
		}
	}
	t.mu.Unlock()
	mem := make(map[*treeNode]int64, len(zs))
	for n, z := range zs {
		if m, err := z.MemoryBytes(ctx); err == nil {
			mem[n] = int64(m)
		}
	}
	t.mu.Lock()
	for n, m := range mem {
		n.memory = m
	}
	victims := t.pol.prune(t.now())
	t.mu.Unlock()
	var errs []error
	for _, n := range victims {
		t.log.Info().Str("zygote", n.id).Strs("packages", n.pkgs).Msg("pruning zygote")
		if err := n.z.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Node describes one zygote of the tree.
type Node struct {
	ID       string
	Parent   string   // "" for the root
	Packages []string // all imported, ancestors' included, sorted
	Static   bool
	Ready    bool
	Forks    uint64
	LastUse  time.Time
	Memory   int64 // bytes at the last measurement
	Zygote   *Zygote
}

// Nodes lists the tree's zygotes, parents before children.
func (t *Tree) Nodes() []Node {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Node, 0, len(t.pol.nodes))
	for _, n := range t.pol.nodes {
		nd := Node{ID: n.id, Packages: append([]string(nil), n.pkgs...), Static: n.static, Ready: n.ready,
			Forks: n.forks, LastUse: n.lastUse, Memory: n.memory, Zygote: n.z}
		if n.parent != nil {
			nd.Parent = n.parent.id
		}
		out = append(out, nd)
	}
	return out
}

// Close stops every zygote, children first, and waits for background work.
func (t *Tree) Close(ctx context.Context) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.stop)
	t.mu.Unlock()
	t.wg.Wait()
	t.mu.Lock()
	nodes := append([]*treeNode(nil), t.pol.nodes...)
	t.mu.Unlock()
	var errs []error
	for i := len(nodes) - 1; i >= 0; i-- {
		if nodes[i].z != nil {
			if err := nodes[i].z.Close(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
