package sandboxtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
)

const (
	// opTimeout bounds every call into the backend and every wait.
	opTimeout = 20 * time.Second
	// hangGrace is how long after its context ends a call may still block
	// before the suite reports the backend as ignoring the context.
	hangGrace = 5 * time.Second
)

// harness is one check's backend. It closes the backend when the check
// ends, unless the check closed it itself.
type harness struct {
	b      sandbox.Backend
	closed bool
}

func open(t *testing.T, newBackend func(t *testing.T) sandbox.Backend) *harness {
	t.Helper()
	b := newBackend(t)
	if b == nil {
		t.Fatal("newBackend returned a nil backend")
	}
	h := &harness{b: b}
	// Registered before any sandbox, so it runs after their cleanups.
	t.Cleanup(func() {
		if h.closed {
			return
		}
		if err := h.close(); err != nil {
			t.Errorf("close backend %s: %v", b.Name(), err)
		}
	})
	return h
}

func (h *harness) close() error {
	h.closed = true
	return do("close backend", h.b.Close)
}

// create makes a sandbox with a fresh unique ID and destroys it when the
// check ends.
func (h *harness) create(t *testing.T, spec sandbox.Spec) sandbox.Sandbox {
	t.Helper()
	id := testutil.UniqueName(t)
	sb, err := h.createID(t, id, spec)
	if err != nil {
		t.Fatalf("create sandbox %q: %v", id, err)
	}
	return sb
}

// createID calls Create; a sandbox it returns is destroyed, and checked to
// be gone, when the check ends.
func (h *harness) createID(t *testing.T, id string, spec sandbox.Spec) (sandbox.Sandbox, error) {
	t.Helper()
	sb, err := within("create", func(ctx context.Context) (sandbox.Sandbox, error) {
		return h.b.Create(ctx, id, spec)
	})
	if sb != nil {
		destroyAtEnd(t, sb)
	}
	return sb, err
}

// destroyAtEnd destroys sb when the check ends and verifies it left
// nothing. Cleanups run last-registered first, so a sandbox that reuses a
// pooled cgroup or root of an earlier one is gone before the earlier one's
// leftovers are inspected.
func destroyAtEnd(t *testing.T, sb sandbox.Sandbox) {
	t.Cleanup(func() {
		before := snapshot(sb)
		// A sandbox the check already destroyed (or whose backend it
		// closed) may answer ErrState; anything else is a failure.
		if err := do("destroy", sb.Destroy); err != nil && !errors.Is(err, sandbox.ErrState) {
			t.Errorf("destroy sandbox %s at the end of the check: %v", sb.ID(), err)
		}
		before.assertGone(t)
	})
}

// startCtx bounds a Start. It is cancelled when the check ends rather than
// when Start returns, so the suite does not depend on whether a backend ties
// a process's life to Start's context.
func startCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// within calls f with a context that expires after opTimeout.
func within[T any](what string, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return bounded(ctx, what, f)
}

// do calls one of the context-only methods (Pause, Destroy, ...), bounded.
func do(what string, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return boundedErr(ctx, what, f)
}

func destroy(t *testing.T, sb sandbox.Sandbox) {
	t.Helper()
	if err := do("destroy", sb.Destroy); err != nil {
		t.Fatalf("destroy sandbox %s: %v", sb.ID(), err)
	}
}

// bounded calls f(ctx) and gives up hangGrace after ctx is done, so a
// backend that ignores its context fails a check instead of hanging it.
func bounded[T any](ctx context.Context, what string, f func(context.Context) (T, error)) (T, error) {
	type outcome struct {
		v   T
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		v, err := f(ctx)
		done <- outcome{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
	}
	timer := time.NewTimer(hangGrace)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.v, r.err
	case <-timer.C:
		var zero T
		return zero, fmt.Errorf("%s still blocked %v after its context ended (%v)", what, hangGrace, ctx.Err())
	}
}

func boundedErr(ctx context.Context, what string, f func(context.Context) error) error {
	_, err := bounded(ctx, what, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, f(ctx)
	})
	return err
}

// Programs more than one check runs.
var (
	busyLoop = sh("while :; do :; done") // burns CPU without forking
	sleep30  = sandbox.ProcessSpec{Args: []string{"/bin/sleep", "30"}}
)

// sh is a process spec running script with /bin/sh; args become $1, $2, ...
func sh(script string, args ...string) sandbox.ProcessSpec {
	return sandbox.ProcessSpec{Args: append([]string{"/bin/sh", "-c", script, "sh"}, args...)}
}

// python is a process spec running Debian's python3 (the only one the
// default base contains) on code; args become sys.argv[1:].
func python(code string, args ...string) sandbox.ProcessSpec {
	return sandbox.ProcessSpec{Args: append([]string{"/usr/bin/python3", "-c", code}, args...)}
}

// asUser returns p running as u.
func asUser(p sandbox.ProcessSpec, u sandbox.User) sandbox.ProcessSpec {
	p.User = &u
	return p
}

var root = sandbox.User{UID: 0, GID: 0}

// started is a running process and the buffers its output goes to.
type started struct {
	sandbox.Process
	stdout, stderr *testutil.SyncBuffer
}

// start starts p in sb, sending output to fresh buffers unless p already
// says where it goes.
func start(t *testing.T, sb sandbox.Sandbox, p sandbox.ProcessSpec) started {
	t.Helper()
	s, err := tryStart(t, sb, p)
	if err != nil {
		t.Fatalf("start %q in sandbox %s: %v", p.Args, sb.ID(), err)
	}
	return s
}

func tryStart(t testing.TB, sb sandbox.Sandbox, p sandbox.ProcessSpec) (started, error) {
	s := started{stdout: new(testutil.SyncBuffer), stderr: new(testutil.SyncBuffer)}
	if p.Stdout == nil {
		p.Stdout = s.stdout
	}
	if p.Stderr == nil {
		p.Stderr = s.stderr
	}
	proc, err := bounded(startCtx(t), "start", func(ctx context.Context) (sandbox.Process, error) {
		return sb.Start(ctx, p)
	})
	if err == nil && proc == nil {
		err = errors.New("start returned neither a process nor an error")
	}
	s.Process = proc
	return s, err
}

// wait waits for the process and returns what it did.
func (s started) wait(t *testing.T) result {
	t.Helper()
	r, err := s.tryWait(0)
	if err != nil {
		t.Fatalf("wait for pid %d: %v (so far %s)", s.Pid(), err, r)
	}
	return r
}

// tryWait waits up to d, or opTimeout when d is 0.
func (s started) tryWait(d time.Duration) (result, error) {
	if d == 0 {
		d = opTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	st, err := bounded(ctx, "wait", s.Wait)
	return result{stdout: s.stdout.String(), stderr: s.stderr.String(), status: st}, err
}

// run starts p in sb and waits for it.
func run(t *testing.T, sb sandbox.Sandbox, p sandbox.ProcessSpec) result {
	t.Helper()
	return start(t, sb, p).wait(t)
}

// runOnce runs p in a new sandbox made from spec. Every run gets its own
// sandbox because a backend may refuse a second process in one.
func (h *harness) runOnce(t *testing.T, spec sandbox.Spec, p sandbox.ProcessSpec) result {
	t.Helper()
	return run(t, h.create(t, spec), p)
}

// result is what a process did.
type result struct {
	stdout, stderr string
	status         sandbox.ExitStatus
}

func (r result) String() string {
	return fmt.Sprintf("exit code %d, signal %d, oom-killed %v; stdout %q; stderr %q",
		r.status.Code, r.status.Signal, r.status.OOMKilled, r.stdout, r.stderr)
}

// lines splits stdout into lines without the trailing empty one.
func (r result) lines() []string {
	s := strings.TrimRight(r.stdout, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func mustSucceed(t *testing.T, what string, r result) {
	t.Helper()
	if !r.status.Success() {
		t.Fatalf("%s: want a clean exit, got %s", what, r)
	}
}

// stats reads sb's usage or fails the check.
func stats(t *testing.T, sb sandbox.Sandbox) sandbox.Stats {
	t.Helper()
	st, err := within("stats", sb.Stats)
	if err != nil {
		t.Fatalf("stats of sandbox %s: %v", sb.ID(), err)
	}
	return st
}

// eventually polls cond every 10 ms until it holds or d has passed.
func eventually(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}
