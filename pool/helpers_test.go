package pool

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkLeaks fails t if, once t and its cleanups are done, a goroutine
// started by this package (or running its code) is still alive. Goroutines
// that are about to exit get a moment to do so.
func checkLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for {
			left := packageGoroutines()
			if len(left) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutine(s) leaked:\n\n%s", len(left), strings.Join(left, "\n\n"))
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
}

func packageGoroutines() []string {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var left []string
	// The first goroutine in the dump is the caller's own.
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i > 0 && strings.Contains(g, "sockfaas/sockfaas/pool.") {
			left = append(left, g)
		}
	}
	return left
}

// eventually polls cond until it holds or a generous deadline passes; the
// deadline only matters when the test fails.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeInstance records what the cache does to it and checks the Instance
// invariants: no Pause, Unpause or Close while leased or concurrently with
// each other, and Close exactly once.
type fakeInstance struct {
	t    testing.TB
	name string

	leased atomic.Int32 // set by tests while they hold a lease
	inCall atomic.Int32 // Pause, Unpause or Close running
	mem    atomic.Uint64

	mu        sync.Mutex
	frozen    bool
	closed    int
	pauses    int
	unpauses  int
	pauseErr  error
	resumeErr error
	// pauseGate, when set, makes Pause block until it is closed or ctx is
	// done (ignoreCancel: only the gate).
	pauseGate    chan struct{}
	ignoreCancel bool
	pauseStarted chan struct{} // closed when a Pause begins, if set
}

var _ Instance = (*fakeInstance)(nil)

func newFake(t testing.TB, name string) *fakeInstance {
	return &fakeInstance{t: t, name: name}
}

func (f *fakeInstance) enter(op string) func() {
	if f.inCall.Add(1) != 1 {
		f.t.Errorf("%s: %s concurrently with another Pause/Unpause/Close", f.name, op)
	}
	if f.leased.Load() != 0 {
		f.t.Errorf("%s: %s while leased", f.name, op)
	}
	return func() { f.inCall.Add(-1) }
}

func (f *fakeInstance) Pause(ctx context.Context) error {
	defer f.enter("Pause")()
	f.mu.Lock()
	f.frozen = true // the freeze is requested at once; Pause waits for it
	gate, started, ignore, err := f.pauseGate, f.pauseStarted, f.ignoreCancel, f.pauseErr
	f.mu.Unlock()
	if started != nil {
		close(started)
	}
	if gate != nil {
		if ignore {
			<-gate
		} else {
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		return err
	}
	f.pauses++
	return nil
}

func (f *fakeInstance) Unpause(ctx context.Context) error {
	defer f.enter("Unpause")()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resumeErr != nil {
		return f.resumeErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f.frozen = false
	f.unpauses++
	return nil
}

func (f *fakeInstance) MemoryBytes(context.Context) (uint64, error) {
	f.mu.Lock()
	closed := f.closed > 0
	f.mu.Unlock()
	if closed {
		return 0, errors.New("closed")
	}
	return f.mem.Load(), nil
}

func (f *fakeInstance) Close(context.Context) error {
	defer f.enter("Close")()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	if f.closed > 1 {
		f.t.Errorf("%s closed %d times", f.name, f.closed)
	}
	return nil
}

func (f *fakeInstance) state() (frozen bool, closed, pauses, unpauses int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.frozen, f.closed, f.pauses, f.unpauses
}

func (f *fakeInstance) isClosed() bool {
	_, c, _, _ := f.state()
	return c > 0
}

// use holds a lease the way a request would: it marks the fake as leased
// while the test works with it.
func use(l *Lease) *fakeInstance {
	f := l.Instance().(*fakeInstance)
	if f.leased.Add(1) != 1 {
		f.t.Errorf("%s leased twice", f.name)
	}
	return f
}

func release(l *Lease, healthy bool) {
	l.Instance().(*fakeInstance).leased.Add(-1)
	l.Release(healthy)
}
