package sandboxtest

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/sandbox"
)

// 10. Exit codes and signals are reported exactly, Wait is repeatable and
// concurrent, and a Wait that gives up loses nothing.
func checkExitStatus(t *testing.T, h *harness) {
	r := h.runOnce(t, sandbox.Spec{}, sh("exit 3"))
	if want := (sandbox.ExitStatus{Code: 3}); r.status != want {
		t.Errorf("sh -c 'exit 3': want %+v, got %s", want, r)
	}

	// sleep may be PID 1 of its namespace, where the kernel drops signals
	// it has no handler for: the backend must deliver them anyway.
	p := start(t, h.create(t, sandbox.Spec{}), sleep30)
	if _, _, ok := procStat(p.Pid()); p.Pid() <= 0 || !ok {
		t.Errorf("Pid() = %d is not a live host process", p.Pid())
	}
	if r, err := p.tryWait(100 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait with a context that expires: want its deadline, got %s, %v", r, err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if st, err := bounded(cancelled, "wait", p.Wait); !errors.Is(err, context.Canceled) {
		t.Errorf("wait with a cancelled context: want context.Canceled, got %+v, %v", st, err)
	}
	waiters := make([]sandbox.ExitStatus, 4)
	errs := make([]error, len(waiters))
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Go(func() { waiters[i], errs[i] = within("wait", p.Wait) })
	}
	time.Sleep(50 * time.Millisecond) // let the waiters block first
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal SIGTERM: %v", err)
	}
	wg.Wait()
	want := sandbox.ExitStatus{Code: -1, Signal: syscall.SIGTERM}
	for i := range waiters {
		if errs[i] != nil || waiters[i] != want {
			t.Errorf("concurrent wait %d after SIGTERM: want %+v, got %+v, %v", i, want, waiters[i], errs[i])
		}
	}
	if r := p.wait(t); r.status != want {
		t.Errorf("wait again after SIGTERM: want %+v, got %s", want, r)
	}

	p = start(t, h.create(t, sandbox.Spec{}), sleep30)
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("signal SIGKILL: %v", err)
	}
	if r, want := p.wait(t), (sandbox.ExitStatus{Code: -1, Signal: syscall.SIGKILL}); r.status != want {
		t.Errorf("sleep after SIGKILL: want %+v, got %s", want, r)
	}

	// A signal the program handles reaches its handler.
	p = start(t, h.create(t, sandbox.Spec{}), sh(`trap 'exit 5' TERM; echo ready; sleep 30 >/dev/null 2>&1 & wait`))
	if !eventually(opTimeout, func() bool { return p.stdout.String() != "" }) {
		t.Fatalf("trapping shell never became ready: stderr %q", p.stderr)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal SIGTERM: %v", err)
	}
	if r := p.wait(t); r.status != (sandbox.ExitStatus{Code: 5}) {
		t.Errorf("shell trapping SIGTERM with 'exit 5': got %s", r)
	}
}

// A second Start in a live sandbox either joins it or is refused with
// ErrUnsupported, as the interface allows.
func checkSecondProcess(t *testing.T, h *harness) {
	sb := h.create(t, sandbox.Spec{Hostname: "sbx-second"})
	first := start(t, sb, sleep30)
	second, err := tryStart(t, sb, sandbox.ProcessSpec{Args: []string{"/bin/hostname"}})
	if errors.Is(err, sandbox.ErrUnsupported) {
		t.Logf("backend %s runs one process per sandbox: %v", h.b.Name(), err)
		return
	}
	if err != nil {
		t.Fatalf("second start: want success or ErrUnsupported, got %v", err)
	}
	r := second.wait(t)
	mustSucceed(t, "second process", r)
	if r.stdout != "sbx-second\n" {
		t.Errorf("second process sees hostname %q, want the sandbox's sbx-second", r.stdout)
	}
	pids := sb.Info().Pids
	if !slices.Contains(pids, first.Pid()) || !slices.Contains(pids, second.Pid()) {
		t.Errorf("Info().Pids = %v, want both %d and %d", pids, first.Pid(), second.Pid())
	}
	if _, _, ok := procStat(first.Pid()); !ok {
		t.Errorf("first process %d died when the second ran", first.Pid())
	}
}

// 12. Env is passed exactly, Dir is honoured, Args[0] is looked up in PATH
// and stdio is connected (nil meaning /dev/null, *os.File passed as is).
func checkStdioEnvDir(t *testing.T, h *harness) {
	env := []string{"FOO=bar baz", "EMPTY=", "SOCKFAAS_CHECK=1"}
	r := h.runOnce(t, sandbox.Spec{}, sandbox.ProcessSpec{Args: []string{"/usr/bin/env"}, Env: env})
	mustSucceed(t, "env", r)
	if got := slices.Sorted(slices.Values(r.lines())); !slices.Equal(got, slices.Sorted(slices.Values(env))) {
		t.Errorf("environment: want exactly %q, got %q", env, got)
	}

	// nil Env: a minimal PATH and HOME and nothing of the caller's.
	t.Setenv("SOCKFAAS_SUITE_LEAK", "1")
	r = h.runOnce(t, sandbox.Spec{}, sandbox.ProcessSpec{Args: []string{"env"}})
	mustSucceed(t, "env found through the default PATH", r)
	var keys []string
	for _, line := range r.lines() {
		k, _, _ := strings.Cut(line, "=")
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"HOME", "PATH"}) {
		t.Errorf("default environment: want only HOME and PATH, got %q", r.lines())
	}

	for dir, want := range map[string]string{"/tmp": "/tmp\n", "": "/\n"} {
		r = h.runOnce(t, sandbox.Spec{}, sandbox.ProcessSpec{Args: []string{"/bin/pwd"}, Dir: dir})
		mustSucceed(t, "pwd", r)
		if r.stdout != want {
			t.Errorf("pwd with Dir %q: want %q, got %s", dir, want, r)
		}
	}

	// More than a pipe buffer, not text.
	in := make([]byte, 256<<10)
	rng := rand.NewChaCha8([32]byte{})
	_, _ = rng.Read(in)
	r = h.runOnce(t, sandbox.Spec{}, sandbox.ProcessSpec{Args: []string{"cat"}, Stdin: bytes.NewReader(in)})
	mustSucceed(t, "cat", r)
	if r.stdout != string(in) {
		t.Errorf("cat of %d bytes on stdin returned %d different bytes", len(in), len(r.stdout))
	}

	r = h.runOnce(t, sandbox.Spec{}, sh(`echo out; echo err >&2`))
	mustSucceed(t, "echo", r)
	if r.stdout != "out\n" || r.stderr != "err\n" {
		t.Errorf("stdout and stderr: want %q and %q, got %s", "out\n", "err\n", r)
	}

	r = h.runOnce(t, sandbox.Spec{}, sh(`cat; echo done`))
	mustSucceed(t, "cat with nil stdin", r)
	if r.stdout != "done\n" {
		t.Errorf("nil Stdin must read as /dev/null: got %s", r)
	}

	f, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := sh(`echo to file`)
	p.Stdout = f
	mustSucceed(t, "echo to an *os.File", h.runOnce(t, sandbox.Spec{}, p))
	if got, err := os.ReadFile(f.Name()); err != nil || string(got) != "to file\n" {
		t.Errorf("stdout to an *os.File: want %q, got %q, %v", "to file\n", got, err)
	}
}
