package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// newTestHandlers makes a cache on a fake clock whose janitor the test runs
// by hand (h.sweep), and closes it when the test ends.
func newTestHandlers(t *testing.T, cfg HandlersConfig) (*Handlers, *fakeClock) {
	t.Helper()
	checkLeaks(t)
	clk := newFakeClock()
	h, err := newHandlers(cfg, clk.Now, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeHandlers(t, h) })
	return h, clk
}

func closeHandlers(t *testing.T, h *Handlers) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// warm registers a fresh instance under key and releases it, as after a
// cold start.
func warm(t *testing.T, h *Handlers, key string, mem uint64) *fakeInstance {
	t.Helper()
	f := newFake(t, fmt.Sprintf("%s#%d", key, h.Stats().Added+1))
	f.mem.Store(mem)
	l := h.Add(key, f)
	if l.Start() != StartCold || l.Key() != key {
		t.Fatalf("Add: start %v key %q", l.Start(), l.Key())
	}
	use(l)
	release(l, true)
	return f
}

func mustAcquire(t *testing.T, h *Handlers, key string, want Start) (*Lease, *fakeInstance) {
	t.Helper()
	l, err := h.Acquire(context.Background(), key)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	if l.Start() != want {
		t.Fatalf("Acquire(%q): start %v, want %v", key, l.Start(), want)
	}
	return l, use(l)
}

func wantCounts(t *testing.T, h *Handlers, key string, want Counts) {
	t.Helper()
	if got := h.Counts(key); got != want {
		t.Errorf("Counts(%q) = %+v, want %+v", key, got, want)
	}
}

func TestHandlersAcquireReleaseReuse(t *testing.T) {
	h, _ := newTestHandlers(t, HandlersConfig{})
	ctx := context.Background()

	if _, err := h.Acquire(ctx, "f"); !errors.Is(err, ErrMiss) {
		t.Fatalf("Acquire on empty cache: %v, want ErrMiss", err)
	}
	f := newFake(t, "f1")
	l := h.Add("f", f)
	use(l)
	wantCounts(t, h, "f", Counts{Busy: 1})
	if _, err := h.Acquire(ctx, "f"); !errors.Is(err, ErrMiss) {
		t.Fatalf("Acquire with the only instance leased: %v, want ErrMiss", err)
	}
	release(l, true)
	wantCounts(t, h, "f", Counts{Idle: 1})

	for range 3 {
		l, got := mustAcquire(t, h, "f", StartWarm)
		if got != f {
			t.Fatalf("Acquire returned %s, want the idle f1", got.name)
		}
		wantCounts(t, h, "f", Counts{Busy: 1})
		release(l, true)
		l.Release(true) // a second Release is a no-op
	}
	if _, err := h.Acquire(ctx, "g"); !errors.Is(err, ErrMiss) {
		t.Fatalf("Acquire for another key: %v, want ErrMiss", err)
	}
	s := h.Stats()
	if s.Hits != 3 || s.Misses != 3 || s.Added != 1 || s.Idle != 1 || s.Keys != 1 {
		t.Errorf("stats %+v", s)
	}
	if f.isClosed() {
		t.Error("instance closed while cached")
	}
	closeHandlers(t, h)
	if !f.isClosed() {
		t.Error("Close left the idle instance open")
	}
	if _, err := h.Acquire(ctx, "f"); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire after Close: %v, want ErrClosed", err)
	}
}

// The most recently used idle instance is handed out first.
func TestHandlersPrefersMostRecentlyUsed(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{})
	a := warm(t, h, "f", 0)
	clk.Advance(time.Millisecond)
	b := warm(t, h, "f", 0)
	l, got := mustAcquire(t, h, "f", StartWarm)
	if got != b {
		t.Errorf("got %s, want the most recently used %s", got.name, b.name)
	}
	release(l, true)
	_ = a
}

// 100 goroutines hammer a few keys while a real janitor pauses instances
// after 1 ms: no instance is ever leased twice, paused while leased, or
// touched by two operations at once (fakeInstance checks the last two).
func TestHandlersOneLeasePerInstance(t *testing.T) {
	checkLeaks(t)
	h, err := NewHandlers(HandlersConfig{
		PauseAfter:    time.Millisecond,
		SweepInterval: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"a", "b", "c"}
	var mu sync.Mutex
	var all []*fakeInstance
	var wg sync.WaitGroup
	ctx := context.Background()
	for g := range 100 {
		wg.Go(func() {
			for i := range 100 {
				key := keys[(g+i)%len(keys)]
				l, err := h.Acquire(ctx, key)
				if errors.Is(err, ErrMiss) {
					f := newFake(t, fmt.Sprintf("%s-%d-%d", key, g, i))
					mu.Lock()
					all = append(all, f)
					mu.Unlock()
					l = h.Add(key, f)
				} else if err != nil {
					t.Error(err)
					return
				}
				f := use(l)
				if frozen, _, _, _ := f.state(); frozen {
					t.Errorf("%s leased while frozen", f.name)
				}
				if i%10 == 0 {
					time.Sleep(time.Millisecond) // let the janitor catch some idle ones
				}
				release(l, i%37 != 0)
			}
		})
	}
	wg.Wait()
	s := h.Stats()
	if s.Busy != 0 || s.Hits+s.Resumes+s.Misses != 100*100 {
		t.Errorf("stats %+v", s)
	}
	t.Logf("%d instances; stats %+v", len(all), s)
	closeHandlers(t, h)
	for _, f := range all {
		if !f.isClosed() {
			t.Errorf("%s not closed", f.name)
		}
	}
}

func TestHandlersPauseAfterIdle(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{PauseAfter: time.Second})
	ctx := context.Background()
	f := warm(t, h, "f", 0)

	clk.Advance(500 * time.Millisecond)
	h.sweep(ctx)
	if frozen, _, _, _ := f.state(); frozen {
		t.Fatal("paused before PauseAfter")
	}
	wantCounts(t, h, "f", Counts{Idle: 1})

	clk.Advance(500 * time.Millisecond)
	h.sweep(ctx)
	if frozen, _, pauses, _ := f.state(); !frozen || pauses != 1 {
		t.Fatalf("after PauseAfter: frozen=%v pauses=%d", frozen, pauses)
	}
	wantCounts(t, h, "f", Counts{Paused: 1})
	if s := h.Stats(); s.Pauses != 1 || s.Paused != 1 {
		t.Errorf("stats %+v", s)
	}
	// Paused instances are not paused again.
	clk.Advance(time.Second)
	h.sweep(ctx)
	if _, _, pauses, _ := f.state(); pauses != 1 {
		t.Errorf("paused %d times", pauses)
	}
}

func TestHandlersPauseConcurrencyLimit(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{PauseAfter: time.Second, PauseConcurrency: 2})
	ctx := context.Background()
	var fs []*fakeInstance
	for i := range 5 {
		fs = append(fs, warm(t, h, fmt.Sprint("f", i), 0))
		clk.Advance(time.Millisecond)
	}
	clk.Advance(2 * time.Second)
	// Sweeps finish their pauses before returning, so each may start two.
	for i, want := range []int{2, 4, 5} {
		h.sweep(ctx)
		if got := h.Stats().Paused; got != want {
			t.Fatalf("after sweep %d: %d paused, want %d", i+1, got, want)
		}
	}
	// Oldest first.
	if frozen, _, _, _ := fs[0].state(); !frozen {
		t.Error("the oldest idle instance was not among the first paused")
	}
}

func TestHandlersResumeOnAcquire(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{PauseAfter: time.Second})
	ctx := context.Background()
	f := warm(t, h, "f", 0)
	clk.Advance(time.Second)
	h.sweep(ctx)

	l, got := mustAcquire(t, h, "f", StartPaused)
	if got != f {
		t.Fatal("resumed the wrong instance")
	}
	if frozen, _, _, unpauses := f.state(); frozen || unpauses != 1 {
		t.Fatalf("after resume: frozen=%v unpauses=%d", frozen, unpauses)
	}
	wantCounts(t, h, "f", Counts{Busy: 1})
	release(l, true)
	// Back to warm: the next lease is a warm one.
	l, _ = mustAcquire(t, h, "f", StartWarm)
	release(l, true)
	if s := h.Stats(); s.Resumes != 1 || s.Hits != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestHandlersResumeFailureTriesNext(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{PauseAfter: time.Second})
	ctx := context.Background()
	good := warm(t, h, "f", 0)
	clk.Advance(time.Millisecond)
	bad := warm(t, h, "f", 0)
	bad.resumeErr = errBoom
	clk.Advance(time.Second)
	h.sweep(ctx)
	wantCounts(t, h, "f", Counts{Paused: 2})

	// bad is the most recently used, so it is tried first, fails, and is
	// closed; good is resumed instead.
	l, got := mustAcquire(t, h, "f", StartPaused)
	if got != good {
		t.Fatalf("got %s, want %s", got.name, good.name)
	}
	release(l, true)
	eventually(t, "bad instance closed", bad.isClosed)
	if s := h.Stats(); s.Errors != 1 {
		t.Errorf("stats %+v: want 1 error", s)
	}
}

func TestHandlersPauseFailureCloses(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{PauseAfter: time.Second})
	f := warm(t, h, "f", 0)
	f.pauseErr = errBoom
	clk.Advance(time.Second)
	h.sweep(context.Background())
	eventually(t, "instance closed", f.isClosed)
	wantCounts(t, h, "f", Counts{})
	if s := h.Stats(); s.Errors != 1 || s.Keys != 0 {
		t.Errorf("stats %+v", s)
	}
}

// An Acquire that finds only an instance being paused cancels the pause,
// waits for Pause to return, and resumes it.
func TestHandlersAcquireDuringPause(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{PauseAfter: time.Second})
	ctx := context.Background()
	f := warm(t, h, "f", 0)
	f.pauseGate = make(chan struct{}) // never opened: only cancellation ends this Pause
	f.pauseStarted = make(chan struct{})
	clk.Advance(time.Second)

	swept := make(chan struct{})
	go func() { defer close(swept); h.sweep(ctx) }()
	<-f.pauseStarted
	wantCounts(t, h, "f", Counts{Idle: 1})

	l, got := mustAcquire(t, h, "f", StartPaused)
	if got != f {
		t.Fatal("wrong instance")
	}
	if frozen, _, pauses, unpauses := f.state(); frozen || pauses != 0 || unpauses != 1 {
		t.Errorf("after acquire: frozen=%v pauses=%d unpauses=%d", frozen, pauses, unpauses)
	}
	<-swept
	wantCounts(t, h, "f", Counts{Busy: 1})
	release(l, true)
	wantCounts(t, h, "f", Counts{Idle: 1})
	if s := h.Stats(); s.Pauses != 0 || s.Resumes != 1 {
		t.Errorf("stats %+v", s)
	}
}

// When Pause does not honour cancellation, an Acquire gives up at its own
// deadline and the instance ends up paused as planned.
func TestHandlersAcquireDuringStuckPause(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{PauseAfter: time.Second})
	ctx := context.Background()
	f := warm(t, h, "f", 0)
	gate := make(chan struct{})
	f.pauseGate, f.ignoreCancel = gate, true
	f.pauseStarted = make(chan struct{})
	clk.Advance(time.Second)

	swept := make(chan struct{})
	go func() { defer close(swept); h.sweep(ctx) }()
	<-f.pauseStarted

	actx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if l, err := h.Acquire(actx, "f"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire during a stuck pause: %v, %v; want DeadlineExceeded", l, err)
	}
	wantCounts(t, h, "f", Counts{Idle: 1})
	close(gate)
	<-swept
	wantCounts(t, h, "f", Counts{Paused: 1})
	l, _ := mustAcquire(t, h, "f", StartPaused)
	release(l, true)
}

// Many Acquires race a sweep that pauses everything: every lease gets a
// running instance and the counts add up.
func TestHandlersAcquireRacesPause(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{PauseAfter: time.Second, PauseConcurrency: 64})
	ctx := context.Background()
	var fs []*fakeInstance
	for range 32 {
		f := warm(t, h, "f", 0)
		f.pauseGate = make(chan struct{}) // paused only if cancelled... or opened below
		fs = append(fs, f)
	}
	clk.Advance(time.Second)
	swept := make(chan struct{})
	go func() { defer close(swept); h.sweep(ctx) }()

	var wg sync.WaitGroup
	leases := make(chan *Lease, 32)
	for i := range 32 {
		wg.Go(func() {
			if i%2 == 0 {
				close(fs[i].pauseGate) // let some pauses complete
			}
			l, err := h.Acquire(ctx, "f")
			if err != nil {
				t.Error(err)
				return
			}
			f := use(l)
			if frozen, _, _, _ := f.state(); frozen {
				t.Errorf("%s leased frozen", f.name)
			}
			leases <- l
		})
	}
	wg.Wait()
	<-swept
	close(leases)
	n := 0
	for l := range leases {
		n++
		release(l, true)
	}
	if n != 32 {
		t.Fatalf("%d leases, want 32", n)
	}
	wantCounts(t, h, "f", Counts{Idle: 32})
}

func TestHandlersEvictionUnderBudget(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{
		PauseAfter:     10 * time.Second,
		MemoryBudget:   450,
		SampleInterval: time.Second,
		IdleTimeout:    time.Hour,
	})
	ctx := context.Background()
	// Two paused instances (p1 older than p2), then two idle running ones
	// (w1 older than w2) and one leased.
	p1 := warm(t, h, "f", 10)
	clk.Advance(time.Millisecond)
	p2 := warm(t, h, "g", 10)
	clk.Advance(10 * time.Second)
	h.sweep(ctx) // pauses p1 and p2; samples 20 bytes in all
	w1 := warm(t, h, "g", 10)
	clk.Advance(time.Millisecond)
	w2 := warm(t, h, "f", 10)
	busy := h.Add("f", newFake(t, "busy"))
	bf := use(busy)
	if got := h.Stats().Paused; got != 2 {
		t.Fatalf("%d paused, want 2", got)
	}

	// Everyone grows to 100 bytes: 500 > 450, one must go: p1, the least
	// recently used paused one.
	for _, f := range []*fakeInstance{p1, p2, w1, w2, bf} {
		f.mem.Store(100)
	}
	clk.Advance(time.Second) // a sample is due; nobody idle long enough to pause
	h.sweep(ctx)
	eventually(t, "p1 evicted", p1.isClosed)
	for _, f := range []*fakeInstance{p2, w1, w2, bf} {
		if f.isClosed() {
			t.Errorf("%s evicted, want only p1", f.name)
		}
	}
	if s := h.Stats(); s.Evictions != 1 || s.MemoryBytes != 400 {
		t.Errorf("stats %+v: want 1 eviction and 400 bytes", s)
	}

	// Now 560 bytes, so two must go: p2 (paused) before w1 and w2
	// (running), then w1 (older) before w2; the leased one never.
	p2.mem.Store(100)
	w1.mem.Store(100)
	w2.mem.Store(310)
	bf.mem.Store(50)
	clk.Advance(100 * time.Millisecond)
	h.lastSample = time.Time{} // force a sample
	h.sweep(ctx)
	eventually(t, "p2 and w1 evicted", func() bool { return p2.isClosed() && w1.isClosed() })
	if w2.isClosed() || bf.isClosed() {
		t.Error("evicted more than needed")
	}
	if s := h.Stats(); s.Evictions != 3 || s.MemoryBytes != 360 {
		t.Errorf("stats %+v: want 3 evictions and 360 bytes", s)
	}

	// The leased instance grows past the budget: w2 goes, the leased one
	// stays until it is released, and then goes too.
	bf.mem.Store(1000)
	h.lastSample = time.Time{}
	h.sweep(ctx)
	eventually(t, "w2 evicted", w2.isClosed)
	wantCounts(t, h, "f", Counts{Busy: 1})
	if bf.isClosed() {
		t.Fatal("evicted a leased instance")
	}
	release(busy, true)
	h.sweep(ctx) // no new sample needed: the last one is kept
	eventually(t, "released instance evicted", bf.isClosed)
	if s := h.Stats(); s.Evictions != 5 || s.MemoryBytes != 0 || s.Keys != 0 {
		t.Errorf("stats %+v", s)
	}
}

// The eviction order on its own: paused before running regardless of age,
// least recently used first within each class.
func TestHandlersEvictionOrder(t *testing.T) {
	h, _ := newTestHandlers(t, HandlersConfig{})
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	f := &keyState{name: "f"}
	g := &keyState{name: "g"}
	mk := func(k *keyState, name string, ms int) *entry {
		return &entry{key: k, inst: newFake(t, name), lastUsed: at(ms)}
	}
	idleOld := mk(f, "idle-old", 1)
	idleNew := mk(g, "idle-new", 9)
	pausedA := mk(g, "paused-5", 5)
	pausedB := mk(f, "paused-7", 7)
	pausedC := mk(g, "paused-6", 6)
	f.idle = []*entry{idleOld}
	f.paused = []*entry{pausedB}
	g.idle = []*entry{idleNew}
	g.paused = []*entry{pausedA, pausedC}
	g.pausing = []*entry{mk(g, "pausing", 0)}
	h.mu.Lock()
	h.keys = map[string]*keyState{"f": f, "g": g}
	order := h.evictionOrderLocked()
	h.keys = map[string]*keyState{}
	h.mu.Unlock()
	want := []*entry{pausedA, pausedC, pausedB, idleOld, idleNew}
	if len(order) != len(want) {
		t.Fatalf("%d candidates, want %d", len(order), len(want))
	}
	for i := range want {
		if order[i] != want[i] {
			t.Errorf("eviction %d: %s, want %s", i, order[i].inst.(*fakeInstance).name, want[i].inst.(*fakeInstance).name)
		}
	}
}

func TestHandlersIdleTimeoutCloses(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{PauseAfter: time.Second, IdleTimeout: 5 * time.Second})
	ctx := context.Background()
	old := warm(t, h, "f", 0)
	clk.Advance(2 * time.Second)
	h.sweep(ctx) // pauses old
	young := warm(t, h, "f", 0)
	other := warm(t, h, "g", 0)
	clk.Advance(3 * time.Second)
	h.sweep(ctx) // old: 5 s idle, closed; young: paused
	eventually(t, "old closed", old.isClosed)
	if young.isClosed() || other.isClosed() {
		t.Fatal("closed an instance idle for less than IdleTimeout")
	}
	wantCounts(t, h, "f", Counts{Paused: 1})
	clk.Advance(2 * time.Second)
	h.sweep(ctx)
	eventually(t, "young closed", young.isClosed)
	eventually(t, "other closed", other.isClosed)
	if s := h.Stats(); s.Expired != 3 || s.Keys != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestHandlersUnhealthyReleaseCloses(t *testing.T) {
	h, _ := newTestHandlers(t, HandlersConfig{})
	f := newFake(t, "f1")
	l := h.Add("f", f)
	use(l)
	release(l, false)
	eventually(t, "closed", f.isClosed)
	wantCounts(t, h, "f", Counts{})
	if _, err := h.Acquire(context.Background(), "f"); !errors.Is(err, ErrMiss) {
		t.Errorf("Acquire after unhealthy release: %v, want ErrMiss", err)
	}
	if s := h.Stats(); s.Unhealthy != 1 || s.Keys != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestHandlersMaxIdlePerKey(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{MaxIdlePerKey: 2, PauseAfter: time.Second})
	ctx := context.Background()
	a := warm(t, h, "f", 0)
	clk.Advance(time.Second)
	h.sweep(ctx) // a paused
	b := warm(t, h, "f", 0)
	clk.Advance(time.Millisecond)
	c := warm(t, h, "f", 0) // third idle: a (paused) goes
	eventually(t, "a closed", a.isClosed)
	if b.isClosed() || c.isClosed() {
		t.Fatal("closed the wrong instance")
	}
	_ = warm(t, h, "f", 0) // b, the least recently used running one, goes
	eventually(t, "b closed", b.isClosed)
	wantCounts(t, h, "f", Counts{Idle: 2})
	if s := h.Stats(); s.Evictions != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestHandlersCloseWaitsForLeases(t *testing.T) {
	checkLeaks(t)
	h, err := NewHandlers(HandlersConfig{})
	if err != nil {
		t.Fatal(err)
	}
	idle := warm(t, h, "f", 0)
	held := newFake(t, "held")
	heldLease := h.Add("f", held)
	use(heldLease)
	lease, _ := mustAcquire(t, h, "f", StartWarm) // idle, now leased

	// With a short deadline, Close says it is still waiting...
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with leases out: %v, want DeadlineExceeded", err)
	}
	if idle.isClosed() || held.isClosed() {
		t.Fatal("Close closed a leased instance")
	}

	// ...and a second Close waits for the last release.
	closed := make(chan error, 1)
	go func() { closed <- h.Close(context.Background()) }()
	notYet := func() {
		t.Helper()
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) with a lease out", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	notYet()
	if _, err := h.Acquire(context.Background(), "f"); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire while closing: %v, want ErrClosed", err)
	}
	release(lease, true) // closed, not cached
	eventually(t, "released instance closed", idle.isClosed)
	notYet()

	// Add after Close: leased to the caller, closed on release.
	late := newFake(t, "late")
	lateLease := h.Add("f", late)
	use(lateLease)
	release(lateLease, true)
	eventually(t, "late instance closed", late.isClosed)
	notYet()

	release(heldLease, true)
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the last release")
	}
	if !held.isClosed() {
		t.Error("held not closed")
	}
}

func TestHandlersJanitorPausesInBackground(t *testing.T) {
	checkLeaks(t)
	h, err := NewHandlers(HandlersConfig{PauseAfter: 10 * time.Millisecond, SampleInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer closeHandlers(t, h)
	f := warm(t, h, "f", 1234)
	eventually(t, "paused by the janitor", func() bool { return h.Counts("f").Paused == 1 })
	eventually(t, "memory sampled", func() bool { return h.Stats().MemoryBytes == 1234 })
	l, got := mustAcquire(t, h, "f", StartPaused)
	if got != f {
		t.Fatal("wrong instance")
	}
	release(l, true)
}

func TestHandlersInvalidConfig(t *testing.T) {
	if _, err := NewHandlers(HandlersConfig{MaxIdlePerKey: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative MaxIdlePerKey: %v, want ErrInvalid", err)
	}
}

func TestStartString(t *testing.T) {
	for s, want := range map[Start]string{StartCold: "cold", StartWarm: "warm", StartPaused: "paused", 7: "Start(7)"} {
		if s.String() != want {
			t.Errorf("%d: %q, want %q", s, s.String(), want)
		}
	}
}

// An Acquire whose context ends during the resume keeps the instance
// cached (paused) rather than blaming it.
func TestHandlersResumeCancelledKeepsInstance(t *testing.T) {
	h, clk := newTestHandlers(t, HandlersConfig{PauseAfter: time.Second})
	f := warm(t, h, "f", 0)
	clk.Advance(time.Second)
	h.sweep(context.Background())

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Acquire(ctx, "f"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a cancelled context: %v, want Canceled", err)
	}
	if f.isClosed() {
		t.Fatal("instance closed after the caller's cancellation")
	}
	wantCounts(t, h, "f", Counts{Paused: 1})
	l, _ := mustAcquire(t, h, "f", StartPaused)
	release(l, true)
	if got := h.CountsByKey(); len(got) != 1 || got["f"] != (Counts{Idle: 1}) {
		t.Errorf("CountsByKey = %v", got)
	}
}
