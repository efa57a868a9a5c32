package cgpool

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/sockfaas/sockfaas/internal/testutil"
	"golang.org/x/sys/unix"
)

func testCtx(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// newTestPool makes a pool under a unique parent and, when the test ends,
// closes it and checks that nothing of it is left in any hierarchy.
func newTestPool(tb testing.TB, cfg Config) *Pool {
	tb.Helper()
	testutil.RequiresRoot(tb)
	if cfg.Name == "" {
		cfg.Name = "/" + testutil.UniqueName(tb)
	}
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.InfoLevel)
	p, err := New(testCtx(tb, 10*time.Second), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { closeAndCheck(tb, p) })
	return p
}

func closeAndCheck(tb testing.TB, p *Pool) {
	tb.Helper()
	if err := p.Close(testCtx(tb, 10*time.Second)); err != nil {
		tb.Errorf("close: %v", err)
	}
	for _, d := range append(append([]string(nil), p.tree.dirs...), p.created...) {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			tb.Errorf("%s left after Close (stat: %v)", d, err)
		}
	}
}

// proc is a test process started blocked on its stdin, so that it can be
// put in a cgroup before it runs the script; it is in its own process
// group, which the test kills at the end whatever happens.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	once  sync.Once
	err   error
}

func startBlocked(tb testing.TB, script string) *proc {
	tb.Helper()
	cmd := exec.Command("/bin/sh", "-c", "read x || exit 1; "+script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return startProc(tb, cmd)
}

func startProc(tb testing.TB, cmd *exec.Cmd) *proc {
	tb.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &proc{cmd: cmd, stdin: stdin}
	tb.Cleanup(func() {
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		_ = p.wait()
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// withSleeper takes a cgroup with limits l from pool and attaches a new
// `sleep 100` to it.
func withSleeper(tb testing.TB, ctx context.Context, pool *Pool, l Limits) (*Cgroup, *proc) {
	tb.Helper()
	c, err := pool.Get(ctx, l)
	if err != nil {
		tb.Fatal(err)
	}
	sleeper := startProc(tb, exec.Command("sleep", "100"))
	if err := c.Attach(sleeper.pid()); err != nil {
		tb.Fatal(err)
	}
	return c, sleeper
}

// release lets the script run.
func (p *proc) release(tb testing.TB) {
	tb.Helper()
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		tb.Fatal(err)
	}
	_ = p.stdin.Close()
}

func (p *proc) wait() error {
	p.once.Do(func() { p.err = p.cmd.Wait() })
	return p.err
}

// waitKilled checks that the process died of SIGKILL within a few seconds.
func (p *proc) waitKilled(tb testing.TB) {
	tb.Helper()
	done := make(chan error, 1)
	go func() { done <- p.wait() }()
	select {
	case <-time.After(5 * time.Second):
		tb.Fatalf("pid %d still alive", p.pid())
	case <-done:
	}
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		tb.Errorf("pid %d ended with %v, want SIGKILL", p.pid(), p.cmd.ProcessState)
	}
}

// utime is the user CPU time of pid in clock ticks (/proc/<pid>/stat
// field 14).
func utime(tb testing.TB, pid int) uint64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func readTrim(tb testing.TB, p string) string {
	tb.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// waitFor polls cond for up to 5s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkFreezeStopsBusyLoop runs a busy loop in c and checks that it gets no
// CPU while frozen and gets it again after Thaw.
func checkFreezeStopsBusyLoop(t *testing.T, c *Cgroup) *proc {
	t.Helper()
	busy := startBlocked(t, "while :; do :; done")
	if err := c.Attach(busy.pid()); err != nil {
		t.Fatal(err)
	}
	busy.release(t)
	waitFor(t, "busy loop to use CPU", func() bool { return utime(t, busy.pid()) > 2 })

	if err := c.Freeze(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	before := utime(t, busy.pid())
	time.Sleep(300 * time.Millisecond)
	if after := utime(t, busy.pid()); after != before {
		t.Errorf("frozen busy loop ran: utime %d -> %d", before, after)
	}
	if err := c.Thaw(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if after := utime(t, busy.pid()); after <= before {
		t.Errorf("thawed busy loop did not run: utime %d -> %d", before, after)
	}
	return busy
}
