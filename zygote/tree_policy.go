package zygote

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Defaults for TreeConfig.
const (
	DefaultGrowAfter     = 3
	DefaultGrowWindow    = time.Minute
	DefaultIdleTimeout   = 10 * time.Minute
	DefaultMaxNodes      = 16
	DefaultCheckInterval = 10 * time.Second
)

// treeNode is a zygote in the tree as the policy sees it.
type treeNode struct {
	id       string
	pkgs     []string // everything imported, ancestors' included; sorted
	own      []string // what this node imports on top of its parent
	parent   *treeNode
	children []*treeNode
	static   bool // root or configured: never pruned
	ready    bool // false while being grown
	lastUse  time.Time
	forks    uint64
	memory   int64 // last measured charge of its cgroup

	z *Zygote // nil in pure policy tests
}

func (n *treeNode) leaf() bool { return len(n.children) == 0 }

// demand counts recent requests for one requirement set that no node
// matches exactly.
type demand struct {
	pkgs     []string
	times    []time.Time
	failedAt time.Time // a growth for it failed; not retried within the idle timeout
	inFlight bool
}

// growPlan asks for a child of parent importing pkgs (the whole set).
type growPlan struct {
	parent *treeNode
	pkgs   []string
	key    string
}

// treePolicy is the tree's bookkeeping and decisions, without any process:
// lookup, when to grow, what to prune. Not safe for concurrent use; Tree
// holds a lock around it.
type treePolicy struct {
	growAfter int
	window    time.Duration
	idle      time.Duration
	budget    int64
	maxNodes  int

	root   *treeNode
	nodes  []*treeNode
	demand map[string]*demand
	seq    int
}

func newTreePolicy(cfg TreeConfig, root *treeNode) *treePolicy {
	p := &treePolicy{
		growAfter: cfg.GrowAfter, window: cfg.GrowWindow, idle: cfg.IdleTimeout,
		budget: cfg.MemoryBudget, maxNodes: cfg.MaxNodes,
		root: root, nodes: []*treeNode{root}, demand: map[string]*demand{},
	}
	if p.growAfter == 0 {
		p.growAfter = DefaultGrowAfter
	}
	if p.window == 0 {
		p.window = DefaultGrowWindow
	}
	if p.idle == 0 {
		p.idle = DefaultIdleTimeout
	}
	if p.maxNodes == 0 {
		p.maxNodes = DefaultMaxNodes
	}
	root.static, root.ready = true, true
	return p
}

// normalize sorts and dedupes import names.
func normalize(pkgs []string) []string {
	out := slices.Clone(pkgs)
	out = slices.DeleteFunc(out, func(s string) bool { return s == "" })
	sort.Strings(out)
	return slices.Compact(out)
}

func setKey(pkgs []string) string { return strings.Join(pkgs, ",") }

// subset reports whether sorted a ⊆ sorted b.
func subset(a, b []string) bool {
	i := 0
	for _, x := range b {
		if i < len(a) && a[i] == x {
			i++
		}
	}
	return i == len(a)
}

// lookup returns the deepest ready node whose packages are all in reqs
// (most packages wins, the older node on a tie). The root is the fallback
// even when its own packages are not all in reqs: whatever it imports is
// taken to be harmless to every function.
func (p *treePolicy) lookup(reqs []string) *treeNode {
	best := p.root
	for _, n := range p.nodes {
		if !n.ready || !subset(n.pkgs, reqs) {
			continue
		}
		if len(n.pkgs) > len(best.pkgs) || !subset(best.pkgs, reqs) {
			best = n
		}
	}
	return best
}

// use records a fork from n and, when reqs is not exactly n's set, the
// demand for reqs. It returns a plan to grow a node for reqs once the set
// was requested growAfter times within the window, the tree has room and
// no growth for it is under way or recently failed. memoryOK says whether
// the budget allows another zygote.
func (p *treePolicy) use(n *treeNode, reqs []string, now time.Time, memoryOK bool) *growPlan {
	n.lastUse = now
	n.forks++
	key := setKey(reqs)
	if key == setKey(n.pkgs) {
		return nil
	}
	d := p.demand[key]
	if d == nil {
		d = &demand{pkgs: reqs}
		p.demand[key] = d
	}
	cut := now.Add(-p.window)
	d.times = slices.DeleteFunc(append(d.times, now), func(t time.Time) bool { return t.Before(cut) })
	switch {
	case d.inFlight, len(d.times) < p.growAfter, len(p.nodes) >= p.maxNodes, !memoryOK:
		return nil
	case !d.failedAt.IsZero() && now.Sub(d.failedAt) < p.idle:
		return nil
	}
	d.inFlight = true
	return &growPlan{parent: n, pkgs: reqs, key: key}
}

// add puts a grown (or static) node under parent.
func (p *treePolicy) add(parent *treeNode, pkgs []string, static bool, now time.Time) *treeNode {
	p.seq++
	n := &treeNode{id: p.root.id + "-" + strconv.Itoa(p.seq), parent: parent, pkgs: pkgs, static: static, lastUse: now}
	for _, x := range pkgs {
		if !slices.Contains(parent.pkgs, x) {
			n.own = append(n.own, x)
		}
	}
	parent.children = append(parent.children, n)
	p.nodes = append(p.nodes, n)
	return n
}

// grown settles a plan: the node is ready, or the growth failed.
func (p *treePolicy) grown(plan *growPlan, n *treeNode, ok bool, now time.Time) {
	if d := p.demand[plan.key]; d != nil {
		d.inFlight = false
		if ok {
			delete(p.demand, plan.key)
		} else {
			d.failedAt = now
		}
	}
	if n == nil {
		return
	}
	if ok {
		n.ready = true
	} else {
		p.remove(n)
	}
}

// remove drops a leaf.
func (p *treePolicy) remove(n *treeNode) {
	p.nodes = slices.DeleteFunc(p.nodes, func(m *treeNode) bool { return m == n })
	if n.parent != nil {
		n.parent.children = slices.DeleteFunc(n.parent.children, func(m *treeNode) bool { return m == n })
	}
}

// prune picks nodes to remove: every adaptive leaf idle for the idle
// timeout, then, while the measured total is over the budget, adaptive
// leaves least recently used first (a parent becomes a candidate once its
// children are gone). Static nodes are never pruned. It also forgets demand
// older than the window.
func (p *treePolicy) prune(now time.Time) []*treeNode {
	var out []*treeNode
	total := int64(0)
	for _, n := range p.nodes {
		total += n.memory
	}
	for {
		var victim *treeNode
		for _, n := range p.nodes {
			if n.static || !n.ready || !n.leaf() {
				continue
			}
			idle := now.Sub(n.lastUse) >= p.idle
			over := p.budget > 0 && total > p.budget
			if !idle && !over {
				continue
			}
			if victim == nil || n.lastUse.Before(victim.lastUse) {
				victim = n
			}
		}
		if victim == nil {
			break
		}
		p.remove(victim)
		total -= victim.memory
		out = append(out, victim)
	}
	for k, d := range p.demand {
		if !d.inFlight && len(d.times) > 0 && now.Sub(d.times[len(d.times)-1]) > p.window && now.Sub(d.failedAt) > p.idle {
			delete(p.demand, k)
		}
	}
	return out
}

// memoryOK says whether a new zygote estimated at est bytes fits the budget.
func (p *treePolicy) memoryOK(est int64) bool {
	if p.budget <= 0 {
		return true
	}
	total := int64(0)
	for _, n := range p.nodes {
		total += n.memory
	}
	return total+est <= p.budget
}
