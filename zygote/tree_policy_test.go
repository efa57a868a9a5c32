package zygote

import (
	"slices"
	"testing"
	"time"
)

func testPolicy(cfg TreeConfig, rootPkgs ...string) *treePolicy {
	return newTreePolicy(cfg, &treeNode{id: "z", pkgs: normalize(rootPkgs)})
}

func ready(p *treePolicy, parent *treeNode, now time.Time, pkgs ...string) *treeNode {
	n := p.add(parent, normalize(pkgs), false, now)
	n.ready = true
	return n
}

func TestTreeLookupPicksDeepestCoveringNode(t *testing.T) {
	p := testPolicy(TreeConfig{})
	now := time.Unix(1000, 0)
	np := ready(p, p.root, now, "numpy")
	pd := ready(p, np, now, "numpy", "pandas")
	pil := ready(p, p.root, now, "PIL")
	for _, c := range []struct {
		reqs []string
		want *treeNode
	}{
		{nil, p.root},
		{[]string{"requests"}, p.root},
		{[]string{"numpy"}, np},
		{[]string{"numpy", "requests"}, np},
		{[]string{"pandas", "numpy", "scipy"}, pd},
		{[]string{"pandas"}, p.root},   // pandas alone is not under numpy's node
		{[]string{"PIL", "numpy"}, np}, // a tie: the older node
		{[]string{"PIL"}, pil},
	} {
		if got := p.lookup(normalize(c.reqs)); got != c.want {
			t.Errorf("lookup(%v) = %v, want %v", c.reqs, got.pkgs, c.want.pkgs)
		}
	}
	// A node being grown is not used yet.
	scipy := p.add(np, normalize([]string{"numpy", "scipy"}), false, now)
	if got := p.lookup([]string{"numpy", "scipy"}); got != np {
		t.Errorf("lookup found the unready node %v", got.pkgs)
	}
	scipy.ready = true
	if got := p.lookup([]string{"numpy", "scipy"}); got != scipy {
		t.Errorf("lookup after ready = %v", got.pkgs)
	}
}

func TestTreeGrowsAfterRepeatedDemandWithinWindow(t *testing.T) {
	p := testPolicy(TreeConfig{GrowAfter: 3, GrowWindow: time.Minute})
	now := time.Unix(1000, 0)
	reqs := normalize([]string{"pandas", "numpy"})
	// Requests spread wider than the window never add up.
	for i := 0; i < 5; i++ {
		if plan := p.use(p.lookup(reqs), reqs, now.Add(time.Duration(i)*40*time.Second), true); plan != nil {
			t.Fatalf("grew after request %d spaced 40 s apart", i+1)
		}
	}
	now = now.Add(time.Hour)
	var plan *growPlan
	for i := 0; i < 3; i++ {
		plan = p.use(p.lookup(reqs), reqs, now.Add(time.Duration(i)*time.Second), true)
		if i < 2 && plan != nil {
			t.Fatalf("grew after %d requests", i+1)
		}
	}
	if plan == nil || plan.parent != p.root || !slices.Equal(plan.pkgs, reqs) {
		t.Fatalf("no growth plan after 3 requests within the window: %+v", plan)
	}
	// No second plan while the first is in flight.
	if again := p.use(p.root, reqs, now.Add(5*time.Second), true); again != nil {
		t.Fatalf("second plan while one is in flight")
	}
	n := p.add(plan.parent, plan.pkgs, false, now)
	if !slices.Equal(n.own, reqs) {
		t.Errorf("own packages %v, want %v", n.own, reqs)
	}
	p.grown(plan, n, true, now)
	if got := p.lookup(reqs); got != n {
		t.Fatalf("lookup after growth = %v", got.pkgs)
	}
	// Exact matches do not count as demand.
	for i := 0; i < 5; i++ {
		if plan := p.use(n, reqs, now, true); plan != nil {
			t.Fatalf("exactly covered set grew again")
		}
	}
}

func TestTreeGrowthRespectsLimits(t *testing.T) {
	now := time.Unix(1000, 0)
	reqs := []string{"numpy"}
	p := testPolicy(TreeConfig{GrowAfter: 1})
	if plan := p.use(p.root, reqs, now, false); plan != nil {
		t.Errorf("grew although memory does not allow")
	}
	p = testPolicy(TreeConfig{GrowAfter: 1, MaxNodes: 2})
	ready(p, p.root, now, "PIL")
	if plan := p.use(p.root, reqs, now, true); plan != nil {
		t.Errorf("grew beyond MaxNodes")
	}
	// A failed growth is not retried within the idle timeout.
	p = testPolicy(TreeConfig{GrowAfter: 1, IdleTimeout: 10 * time.Minute})
	plan := p.use(p.root, reqs, now, true)
	n := p.add(plan.parent, plan.pkgs, false, now)
	p.grown(plan, n, false, now)
	if len(p.nodes) != 1 {
		t.Errorf("failed node kept: %d nodes", len(p.nodes))
	}
	if again := p.use(p.root, reqs, now.Add(time.Minute), true); again != nil {
		t.Errorf("failed growth retried after a minute")
	}
	if again := p.use(p.root, reqs, now.Add(11*time.Minute), true); again == nil {
		t.Errorf("failed growth not retried after the idle timeout")
	}
	// The memory budget check.
	p = testPolicy(TreeConfig{MemoryBudget: 100})
	p.root.memory = 60
	if !p.memoryOK(40) || p.memoryOK(41) {
		t.Errorf("memoryOK with 60 of 100 used: 40 -> %v, 41 -> %v", p.memoryOK(40), p.memoryOK(41))
	}
}

func TestTreePrunesIdleAndOverBudgetLeaves(t *testing.T) {
	now := time.Unix(1000, 0)
	p := testPolicy(TreeConfig{IdleTimeout: 10 * time.Minute})
	static := p.add(p.root, []string{"PIL"}, true, now)
	static.ready = true
	np := ready(p, p.root, now, "numpy")
	pd := ready(p, np, now.Add(5*time.Minute), "numpy", "pandas")
	// At 12 min numpy is idle but has a child; pandas (used at 5) is not idle.
	if got := p.prune(now.Add(12 * time.Minute)); len(got) != 0 {
		t.Fatalf("pruned %v at 12 min", ids(got))
	}
	// At 16 min pandas is idle and goes, then numpy, a leaf now, too. The
	// root and the static node stay.
	got := p.prune(now.Add(16 * time.Minute))
	if !slices.Equal(ids(got), []string{np.id, pd.id}) && !slices.Equal(ids(got), []string{pd.id, np.id}) {
		t.Fatalf("pruned %v at 16 min, want pandas and numpy", ids(got))
	}
	if got[0] != pd {
		t.Errorf("parent pruned before its child")
	}
	if len(p.nodes) != 2 {
		t.Errorf("%d nodes left, want root and static", len(p.nodes))
	}

	// Over budget: least recently used adaptive leaves go first, until the
	// total fits.
	p = testPolicy(TreeConfig{MemoryBudget: 90})
	p.root.memory = 40
	a := ready(p, p.root, now, "a")
	b := ready(p, p.root, now, "b")
	c := ready(p, p.root, now, "c")
	a.memory, b.memory, c.memory = 30, 30, 30
	a.lastUse, b.lastUse, c.lastUse = now.Add(3*time.Second), now.Add(time.Second), now.Add(2*time.Second)
	got = p.prune(now.Add(4 * time.Second))
	if !slices.Equal(ids(got), []string{b.id, c.id}) {
		t.Fatalf("pruned %v over budget, want b then c", ids(got))
	}
}

func ids(ns []*treeNode) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.id)
	}
	return out
}

func TestUIDPool(t *testing.T) {
	p := NewUIDPool(1000, 2)
	a, err1 := p.Get()
	b, err2 := p.Get()
	if err1 != nil || err2 != nil || a == b || a < 1000 || b > 1001 {
		t.Fatalf("got %d %v, %d %v", a, err1, b, err2)
	}
	if _, err := p.Get(); err == nil {
		t.Fatal("third uid from a pool of two")
	}
	p.Put(a)
	if c, err := p.Get(); err != nil || c != a {
		t.Fatalf("after Put: %d %v", c, err)
	}
}
