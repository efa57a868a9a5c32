package sandboxtest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
)

// 9. Destroy leaves no process (not even a zombie), mount or cgroup member
// behind, is idempotent, and turns every other method into ErrState.
func checkDestroy(t *testing.T, h *harness) {
	data, _ := dataDir(t)
	sb := h.create(t, sandbox.Spec{Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: data, Dest: "/data"}}}})
	p := start(t, sb, sh(`sleep 30 & sleep 30 & wait`))

	info := sb.Info()
	if info.ID != sb.ID() || info.Backend != h.b.Name() {
		t.Errorf("Info() = %+v, want ID %q and Backend %q", info, sb.ID(), h.b.Name())
	}
	if !slices.Contains(info.Pids, p.Pid()) {
		t.Errorf("Info().Pids = %v lacks the started pid %d", info.Pids, p.Pid())
	}
	if len(info.Cgroups) == 0 {
		t.Fatalf("Info().Cgroups is empty")
	}
	// Start returns after the exec, so the process is in every cgroup.
	for _, dir := range info.Cgroups {
		if members, err := cgroupProcs(dir); err != nil || !slices.Contains(members, p.Pid()) {
			t.Errorf("cgroup %s holds %v (%v), want the started pid %d", dir, members, err, p.Pid())
		}
	}
	if info.Root != "" && len(testutil.MountsUnder(info.Root)) == 0 {
		t.Errorf("Info().Root = %s has no mounts under it while the sandbox lives", info.Root)
	}
	var before leftovers
	if !eventually(opTimeout, func() bool { before = snapshot(sb); return len(before.procs) >= 3 }) {
		t.Fatalf("sh and its two sleeps never showed up in the cgroups: %v", before.procs)
	}

	destroy(t, sb)
	before.assertGone(t)
	if err := do("destroy", sb.Destroy); err != nil {
		t.Errorf("second Destroy: want nil, got %v", err)
	}
	if s, err := tryStart(t, sb, sleep30); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("Start after Destroy: want ErrState, got %v", err)
		if err == nil {
			_ = s.Signal(syscall.SIGKILL)
		}
	}
	for name, f := range map[string]func(context.Context) error{
		"Pause":   sb.Pause,
		"Unpause": sb.Unpause,
		"Stats":   func(ctx context.Context) error { _, err := sb.Stats(ctx); return err },
	} {
		if err := do(name, f); !errors.Is(err, sandbox.ErrState) {
			t.Errorf("%s after Destroy: want ErrState, got %v", name, err)
		}
	}
	r := p.wait(t)
	if r.status.Success() {
		t.Errorf("process of a destroyed sandbox exited cleanly: %s", r)
	}
	if again := p.wait(t); again.status != r.status {
		t.Errorf("wait after Destroy changed its answer: %+v then %+v", r.status, again.status)
	}
}

// 11. Bad input is refused with the right error and changes nothing; a
// program that cannot be started fails Start instead of hanging it.
func checkBadInput(t *testing.T, h *harness) {
	for _, id := range []string{"", "../x", "a/b", ".x", "-x", "x y", strings.Repeat("a", 65)} {
		if _, err := h.createID(t, id, sandbox.Spec{}); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("create with id %q: want ErrInvalid, got %v", id, err)
		}
	}

	missing := filepath.Join(t.TempDir(), "missing")
	for name, spec := range map[string]sandbox.Spec{
		"missing bind source":  {Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: missing, Dest: "/data"}}}},
		"relative bind source": {Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: "relative", Dest: "/data"}}}},
		"bind over /proc":      {Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: "/usr", Dest: "/proc"}}}},
		"negative limit":       {Limits: sandbox.Limits{MemoryBytes: -1}},
		"unknown namespace":    {Namespaces: 1 << 20},
	} {
		id := testutil.UniqueName(t)
		if _, err := h.createID(t, id, spec); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("create with a %s: want ErrInvalid, got %v", name, err)
		}
		// Nothing was left to hold the ID.
		if _, err := h.createID(t, id, sandbox.Spec{}); err != nil {
			t.Errorf("create %q after a refused %s: %v", id, name, err)
		}
	}
	if hostExists(missing) {
		t.Errorf("a refused Create made the missing bind source %s", missing)
	}

	sb := h.create(t, sandbox.Spec{})
	if _, err := h.createID(t, sb.ID(), sandbox.Spec{}); !errors.Is(err, sandbox.ErrExists) {
		t.Errorf("create with a live id: want ErrExists, got %v", err)
	}
	for _, args := range [][]string{nil, {""}} {
		if _, err := tryStart(t, sb, sandbox.ProcessSpec{Args: args}); !errors.Is(err, sandbox.ErrInvalid) {
			t.Errorf("start with Args %q: want ErrInvalid, got %v", args, err)
		}
	}
	// The refusals changed nothing: the sandbox runs its first process.
	mustSucceed(t, "first process after refused requests", run(t, sb, sh("exit 0")))
	destroy(t, sb)
	if _, err := h.createID(t, sb.ID(), sandbox.Spec{}); err != nil {
		t.Errorf("create with the id of a destroyed sandbox: %v", err)
	}

	for name, p := range map[string]sandbox.ProcessSpec{
		"missing program":           {Args: []string{"/nonexistent/program"}},
		"program missing in PATH":   {Args: []string{"sockfaas-no-such-program"}},
		"missing working directory": {Args: []string{"/bin/pwd"}, Dir: "/nonexistent"},
	} {
		sb := h.create(t, sandbox.Spec{})
		if s, err := tryStart(t, sb, p); err == nil {
			r, _ := s.tryWait(0)
			t.Errorf("start with a %s: want an error from Start, got a process that did %s", name, r)
		} else {
			t.Logf("start with a %s: %v", name, err)
		}
		before := snapshot(sb)
		destroy(t, sb)
		before.assertGone(t)
	}
}

// 13. Sandboxes are created, run and destroyed concurrently.
func checkConcurrency(t *testing.T, h *harness) {
	const n = 8
	ids := make([]string, n)
	for i := range ids {
		ids[i] = testutil.UniqueName(t)
	}
	left := make([]leftovers, n)
	errs := make([]error, n)
	ready := make(chan struct{})
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			<-ready
			left[i], errs[i] = lifecycle(t, h.b, id)
		})
	}
	close(ready)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("sandbox %d of %d: %v", i+1, n, err)
		}
	}
	// Only now: a pooled cgroup freed by one may already serve another.
	for _, l := range left {
		l.assertGone(t)
	}
}

// lifecycle creates, runs, checks and destroys one sandbox without failing
// t, so that it can run on any goroutine.
func lifecycle(t *testing.T, b sandbox.Backend, id string) (leftovers, error) {
	sb, err := within("create", func(ctx context.Context) (sandbox.Sandbox, error) {
		return b.Create(ctx, id, sandbox.Spec{})
	})
	if err != nil {
		return leftovers{}, fmt.Errorf("create: %w", err)
	}
	destroyAtEnd(t, sb)
	s, err := tryStart(t, sb, sandbox.ProcessSpec{Args: []string{"/bin/hostname"}})
	if err != nil {
		return snapshot(sb), fmt.Errorf("start: %w", err)
	}
	r, err := s.tryWait(0)
	l := snapshot(sb)
	switch {
	case err != nil:
		return l, fmt.Errorf("wait: %w", err)
	case !r.status.Success() || r.stdout != id+"\n":
		return l, fmt.Errorf("hostname: want %q, got %s", id, r)
	}
	if err := do("destroy", sb.Destroy); err != nil {
		return l, fmt.Errorf("destroy: %w", err)
	}
	return l, nil
}

// Close destroys every sandbox the backend holds, started or not, and
// refuses Create afterwards.
func checkClose(t *testing.T, h *harness) {
	running, idle := h.create(t, sandbox.Spec{}), h.create(t, sandbox.Spec{})
	p := start(t, running, sleep30)
	left := []leftovers{snapshot(running), snapshot(idle)}
	if err := h.close(); err != nil {
		t.Errorf("close: %v", err)
	}
	for _, l := range left {
		l.assertGone(t)
	}
	if r, err := p.tryWait(0); err != nil || r.status.Success() {
		t.Errorf("wait for a process of a closed backend: want it killed, got %s, %v", r, err)
	}
	if _, err := h.createID(t, testutil.UniqueName(t), sandbox.Spec{}); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("create after Close: want ErrState, got %v", err)
	}
	if _, err := within("stats", running.Stats); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("Stats of a sandbox destroyed by Close: want ErrState, got %v", err)
	}
}
