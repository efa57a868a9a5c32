package pool

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// items counts what a Generic cache makes and destroys.
type items struct {
	mu        sync.Mutex
	next      int
	live      map[int]bool // made and not destroyed
	destroyed []int
}

func newItems() *items { return &items{live: make(map[int]bool)} }

func (it *items) make() int {
	it.mu.Lock()
	defer it.mu.Unlock()
	it.next++
	it.live[it.next] = true
	return it.next
}

func (it *items) destroy(_ context.Context, n int) error {
	it.mu.Lock()
	defer it.mu.Unlock()
	if !it.live[n] {
		return errors.New("destroyed twice or never made")
	}
	delete(it.live, n)
	it.destroyed = append(it.destroyed, n)
	return nil
}

func (it *items) made() int {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.next
}

func (it *items) nDestroyed() int {
	it.mu.Lock()
	defer it.mu.Unlock()
	return len(it.destroyed)
}

func closeGeneric[T any](t *testing.T, g *Generic[T]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestGenericInvalidConfig(t *testing.T) {
	if _, err := NewGeneric(GenericConfig[int]{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("NewGeneric without Make: %v, want ErrInvalid", err)
	}
}

func TestGenericRefillsToTarget(t *testing.T) {
	checkLeaks(t)
	it := newItems()
	g, err := NewGeneric(GenericConfig[int]{
		Make:        func(context.Context) (int, error) { return it.make(), nil },
		Destroy:     it.destroy,
		Target:      3,
		MaxInFlight: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer closeGeneric(t, g)

	eventually(t, "3 ready", func() bool { return g.Stats().Ready == 3 && g.Stats().Making == 0 })
	if n := it.made(); n != 3 {
		t.Fatalf("made %d items to reach a target of 3", n)
	}
	for i := range 2 {
		n, fromCache, err := g.Get(context.Background())
		if err != nil || !fromCache {
			t.Fatalf("Get %d: %d, fromCache=%v, %v", i, n, fromCache, err)
		}
	}
	eventually(t, "refill to 3", func() bool { return g.Stats().Ready == 3 && g.Stats().Making == 0 })
	if n := it.made(); n != 5 {
		t.Fatalf("made %d items, want 5 (3 + 2 taken)", n)
	}
	if s := g.Stats(); s.Hits != 2 || s.Misses != 0 {
		t.Errorf("stats %+v: want 2 hits, 0 misses", s)
	}
}

type ctxKey struct{}

func TestGenericGetWhenEmptyMakesSynchronously(t *testing.T) {
	checkLeaks(t)
	it := newItems()
	gate := make(chan struct{})
	var background atomic.Int32
	g, err := NewGeneric(GenericConfig[int]{
		Make: func(ctx context.Context) (int, error) {
			if ctx.Value(ctxKey{}) == nil {
				// A background refill, stuck until the gate opens.
				background.Add(1)
				select {
				case <-gate:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}
			return it.make(), nil
		},
		Destroy: it.destroy,
		Target:  1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer closeGeneric(t, g)
	eventually(t, "background make to start", func() bool { return background.Load() == 1 })

	ctx := context.WithValue(context.Background(), ctxKey{}, true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, fromCache, err := g.Get(ctx)
		if err != nil || fromCache || n != 1 {
			t.Errorf("Get on empty cache: %d, fromCache=%v, %v; want a fresh item", n, fromCache, err)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Get waited for the background refill")
	}
	if s := g.Stats(); s.Misses != 1 || s.Hits != 0 || s.Making != 1 {
		t.Errorf("stats %+v: want 1 miss and the refill still running", s)
	}
	close(gate)
	eventually(t, "refill", func() bool { return g.Stats().Ready == 1 })

	// An error from the synchronous Make goes to the caller.
	g2, err := NewGeneric(GenericConfig[int]{
		Make:    func(context.Context) (int, error) { return 0, errBoom },
		Destroy: it.destroy,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer closeGeneric(t, g2)
	if _, _, err := g2.Get(ctx); !errors.Is(err, errBoom) {
		t.Errorf("Get with failing Make: %v, want errBoom", err)
	}
}

var errBoom = errors.New("boom")

// TryGet takes only what is ready: on an empty cache it returns at once,
// counts a miss and leaves Make to the refill.
func TestGenericTryGet(t *testing.T) {
	checkLeaks(t)
	it := newItems()
	gate := make(chan struct{})
	var calls atomic.Int32
	g, err := NewGeneric(GenericConfig[int]{
		Make: func(ctx context.Context) (int, error) {
			calls.Add(1)
			select {
			case <-gate:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			return it.make(), nil
		},
		Destroy: it.destroy,
		Target:  1,
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "background make to start", func() bool { return calls.Load() == 1 })
	if n, ok := g.TryGet(); ok {
		t.Errorf("TryGet on an empty cache: %d", n)
	}
	if s := g.Stats(); s.Misses != 1 || calls.Load() != 1 {
		t.Errorf("stats %+v, %d Make calls: want 1 miss and only the refill's Make", s, calls.Load())
	}
	close(gate)
	eventually(t, "refill", func() bool { return g.Stats().Ready == 1 })
	if n, ok := g.TryGet(); !ok || n != 1 {
		t.Errorf("TryGet on a ready cache: %d, %v", n, ok)
	}
	if s := g.Stats(); s.Hits != 1 {
		t.Errorf("stats %+v: want 1 hit", s)
	}
	_ = it.destroy(context.Background(), 1) // the caller's item
	closeGeneric(t, g)
	if n, ok := g.TryGet(); ok {
		t.Errorf("TryGet after Close: %d", n)
	}
}

func TestGenericMakeFailuresBackOff(t *testing.T) {
	checkLeaks(t)
	it := newItems()
	var calls atomic.Int32
	var failing atomic.Bool
	failing.Store(true)
	g, err := NewGeneric(GenericConfig[int]{
		Make: func(context.Context) (int, error) {
			calls.Add(1)
			if failing.Load() {
				return 0, errBoom
			}
			return it.make(), nil
		},
		Destroy:     it.destroy,
		Target:      2,
		MaxInFlight: 1,
		MinBackoff:  5 * time.Millisecond,
		MaxBackoff:  20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer closeGeneric(t, g)

	// Retried: 5, 10, 20, 20, ... ms apart.
	eventually(t, "3 retries", func() bool { return calls.Load() >= 4 })
	time.Sleep(100 * time.Millisecond)
	// Over about 135 ms the schedule allows about 9 calls; a spinning
	// refill would make thousands. Sleeping longer on a loaded machine
	// only lowers the count.
	if n := calls.Load(); n > 15 {
		t.Fatalf("%d Make calls in ~135 ms: no backoff", n)
	}
	if s := g.Stats(); s.MakeErrors < 4 || s.Ready != 0 || s.Making != 1 {
		t.Errorf("stats %+v: want >= 4 errors and one worker backing off", s)
	}

	failing.Store(false)
	eventually(t, "refill after recovery", func() bool { return g.Stats().Ready == 2 })
	g.mu.Lock()
	f := g.failures
	g.mu.Unlock()
	if f != 0 {
		t.Errorf("failures = %d after a success, want 0", f)
	}
}

func TestGenericBackoffSchedule(t *testing.T) {
	g := &Generic[int]{cfg: GenericConfig[int]{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}}
	want := []time.Duration{10, 20, 40, 50, 50}
	for i, w := range want {
		g.failures = i + 1
		if got := g.backoffLocked(); got != w*time.Millisecond {
			t.Errorf("after %d failures: %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
}

func TestGenericCloseDestroysAll(t *testing.T) {
	checkLeaks(t)
	it := newItems()
	g, err := NewGeneric(GenericConfig[int]{
		Make:        func(context.Context) (int, error) { return it.make(), nil },
		Destroy:     it.destroy,
		Target:      4,
		MaxInFlight: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "4 ready", func() bool { return g.Stats().Ready == 4 })
	taken, _, err := g.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "refill", func() bool { return g.Stats().Ready == 4 && g.Stats().Making == 0 })

	closeGeneric(t, g)
	it.mu.Lock()
	live := len(it.live)
	ok := it.live[taken]
	it.mu.Unlock()
	if live != 1 || !ok {
		t.Errorf("after Close %d items live, want only the one taken (%d)", live, taken)
	}
	if _, _, err := g.Get(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if err := g.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A background Make that finishes after Close (ignoring the cancellation)
// has its item destroyed, not lost.
func TestGenericCloseDuringMake(t *testing.T) {
	checkLeaks(t)
	it := newItems()
	started := make(chan struct{})
	release := make(chan struct{})
	g, err := NewGeneric(GenericConfig[int]{
		Make: func(ctx context.Context) (int, error) {
			close(started)
			<-release
			return it.make(), nil
		},
		Destroy: it.destroy,
		Target:  1,
	})
	if err != nil {
		t.Fatal(err)
	}
	<-started

	// Close gives up waiting when its context ends...
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := g.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a stuck Make: %v, want DeadlineExceeded", err)
	}
	// ...and the worker cleans up after itself.
	close(release)
	eventually(t, "late item destroyed", func() bool { return it.nDestroyed() == 1 })
	if s := g.Stats(); s.Ready != 0 {
		t.Errorf("stats after Close: %+v", s)
	}
}

func TestGenericConcurrentGet(t *testing.T) {
	checkLeaks(t)
	it := newItems()
	g, err := NewGeneric(GenericConfig[int]{
		Make:        func(context.Context) (int, error) { return it.make(), nil },
		Destroy:     it.destroy,
		Target:      8,
		MaxInFlight: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var seen sync.Map
	for range 50 {
		wg.Go(func() {
			for range 20 {
				n, _, err := g.Get(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				if _, dup := seen.LoadOrStore(n, true); dup {
					t.Errorf("item %d handed out twice", n)
				}
			}
		})
	}
	wg.Wait()
	closeGeneric(t, g)
	s := g.Stats()
	if s.Hits+s.Misses != 1000 {
		t.Errorf("stats %+v: want 1000 gets", s)
	}
	it.mu.Lock()
	defer it.mu.Unlock()
	if len(it.live) != 1000 {
		t.Errorf("%d items live after Close, want the 1000 handed out", len(it.live))
	}
}

// Close does not wait out a worker's backoff.
func TestGenericCloseDuringBackoff(t *testing.T) {
	checkLeaks(t)
	var calls atomic.Int32
	g, err := NewGeneric(GenericConfig[int]{
		Make: func(context.Context) (int, error) {
			calls.Add(1)
			return 0, errBoom
		},
		Destroy:    func(context.Context, int) error { return nil },
		Target:     1,
		MinBackoff: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "first failure", func() bool { return g.Stats().MakeErrors == 1 })
	start := time.Now()
	closeGeneric(t, g)
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d Make calls, want 1", n)
	}
}
