package libct

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
)

func TestMain(m *testing.M) {
	// The test binary is re-executed as "<binary> init" inside each
	// container; Init turns that into libcontainer's init.
	Init()
	os.Exit(m.Run())
}

// testLogger writes warnings to stderr. (A testing.T writer would panic when
// libcontainer logs through the process-wide hook after its test ended.)
func testLogger() zerolog.Logger {
	return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

type env struct {
	b      *Backend
	state  string
	parent string
}

// newBackend makes a backend with its own state directory and cgroup parent
// and checks, when the test ends, that closing it leaves nothing behind.
func newBackend(tb testing.TB) *env {
	tb.Helper()
	testutil.RequiresRoot(tb)
	e := &env{state: testutil.StateDir(tb), parent: "/" + testutil.UniqueName(tb)}
	b, err := New(context.Background(), WithStateDir(e.state), WithCgroupParent(e.parent), WithLogger(testLogger()))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	e.b = b
	tb.Cleanup(func() {
		if err := b.Close(context.Background()); err != nil {
			tb.Errorf("Close: %v", err)
		}
		e.checkGone(tb)
	})
	return e
}

// checkGone fails tb if any cgroup of the backend's parent, or anything but
// the lock file in its state directory, is left.
func (e *env) checkGone(tb testing.TB) {
	tb.Helper()
	if left, _ := filepath.Glob("/sys/fs/cgroup/*" + e.parent); len(left) > 0 {
		tb.Errorf("cgroups left: %v", left)
	}
	ents, _ := os.ReadDir(e.state)
	for _, de := range ents {
		if de.Name() != lockFile {
			tb.Errorf("left in state dir: %s", de.Name())
		}
	}
	if m := testutil.MountsUnder(e.state); len(m) > 0 {
		tb.Errorf("mounts left: %v", m)
	}
}

func (e *env) create(tb testing.TB, id string, spec sandbox.Spec) *Sandbox {
	tb.Helper()
	s, err := e.b.Create(context.Background(), id, spec)
	if err != nil {
		tb.Fatalf("Create %s: %v", id, err)
	}
	tb.Cleanup(func() { _ = s.Destroy(context.Background()) })
	return s.(*Sandbox)
}

// run starts args in s and waits, returning stdout+stderr.
func run(tb testing.TB, s sandbox.Sandbox, ps sandbox.ProcessSpec) (string, sandbox.ExitStatus) {
	tb.Helper()
	var out bytes.Buffer
	ps.Stdout, ps.Stderr = &out, &out
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := s.Start(ctx, ps)
	if err != nil {
		tb.Fatalf("Start %v: %v", ps.Args, err)
	}
	st, err := p.Wait(ctx)
	if err != nil {
		tb.Fatalf("Wait %v: %v", ps.Args, err)
	}
	return out.String(), st
}

func sh(script string) sandbox.ProcessSpec {
	return sandbox.ProcessSpec{Args: []string{"/bin/sh", "-c", script}}
}

func TestEcho(t *testing.T) {
	e := newBackend(t)
	s := e.create(t, "echo", sandbox.Spec{})
	out, st := run(t, s, sandbox.ProcessSpec{Args: []string{"/bin/echo", "hi"}})
	if out != "hi\n" || !st.Success() {
		t.Fatalf("got %q %+v, want \"hi\\n\" and success", out, st)
	}
}

func TestExitCodeAndPathLookup(t *testing.T) {
	e := newBackend(t)
	s := e.create(t, "exit", sandbox.Spec{})
	_, st := run(t, s, sh("exit 3"))
	if st.Code != 3 || st.Signal != 0 || st.OOMKilled {
		t.Fatalf("status %+v, want code 3", st)
	}
	// The first process has exited and its namespaces with it.
	if _, err := s.Start(context.Background(), sh("true")); !errors.Is(err, sandbox.ErrState) {
		t.Fatalf("Start after the first process exited: %v, want ErrState", err)
	}

	// A bare name with an environment that has no PATH is found in the
	// default PATH.
	s2 := e.create(t, "lookup", sandbox.Spec{})
	out, st := run(t, s2, sandbox.ProcessSpec{Args: []string{"echo", "found"}, Env: []string{"A=b"}})
	if out != "found\n" || !st.Success() {
		t.Fatalf("got %q %+v", out, st)
	}
}

func TestIsolation(t *testing.T) {
	e := newBackend(t)
	s := e.create(t, "iso", sandbox.Spec{Hostname: "sbx-host", Limits: sandbox.Limits{Pids: 64, CPUMillis: 500}})
	script := `
echo host=$(hostname)
echo ids=$(id -u):$(id -g)
echo procs=$(ls /proc | grep -c '^[0-9]')
if touch /usr/sockfaas-probe 2>/dev/null; then echo usr=writable; else echo usr=ro; fi
if touch /sockfaas-probe 2>/dev/null; then echo root=writable; else echo root=ro; fi
touch /scratch/ok && echo scratch=rw
touch /tmp/ok && echo tmp=rw
echo net=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ,)
grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status | tr -d '\t' | tr '\n' ' '; echo
echo sys=$(ls /sys 2>/dev/null | wc -l)
echo user=$(whoami 2>&1)
test -e /run || echo run=absent
echo cgroupns=$(grep -vc ':/$' /proc/self/cgroup)
echo mounts=$(wc -l < /proc/self/mountinfo)
`
	out, st := run(t, s, sh(script))
	if !st.Success() {
		t.Fatalf("script failed: %+v\n%s", st, out)
	}
	for _, want := range []string{
		"host=sbx-host\n", "ids=65534:65534\n", "usr=ro\n", "root=ro\n", "scratch=rw\n", "tmp=rw\n",
		"net=lo,\n", "CapEff:0000000000000000", "CapBnd:0000000000000000", "NoNewPrivs:1",
		"sys=0\n", "user=nobody\n", "run=absent\n", "cgroupns=0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Only the sandbox's own processes: sh, ls, grep and the subshell.
	var procs int
	for _, l := range strings.Split(out, "\n") {
		fmt.Sscanf(l, "procs=%d", &procs)
	}
	if procs < 1 || procs > 4 {
		t.Errorf("sandbox sees %d processes, want its own few:\n%s", procs, out)
	}
	if _, err := os.Stat(filepath.Join(s.rec.Scratch, "ok")); err != nil {
		t.Errorf("scratch file not visible on the host: %v", err)
	}

	// The default hostname is the id; a root user gets no capabilities.
	s2 := e.create(t, "iso-root", sandbox.Spec{})
	out, _ = run(t, s2, sandbox.ProcessSpec{
		Args: []string{"/bin/sh", "-c", "hostname; id -u; grep CapEff /proc/self/status; touch /etc/x 2>/dev/null || echo etc=ro"},
		User: &sandbox.User{},
	})
	for _, want := range []string{"iso-root\n", "0\n", "0000000000000000", "etc=ro"} {
		if !strings.Contains(out, want) {
			t.Errorf("root process output lacks %q:\n%s", want, out)
		}
	}
}

func TestBindsAndStdin(t *testing.T) {
	e := newBackend(t)
	code := t.TempDir()
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(code, "handler.py"), []byte("print('from handler')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o777); err != nil {
		t.Fatal(err)
	}
	s := e.create(t, "binds", sandbox.Spec{Root: fsbind.Spec{Binds: []fsbind.Bind{
		{Source: code, Dest: "/code"},
		{Source: data, Dest: "/data", Writable: true},
		{Source: filepath.Join(code, "handler.py"), Dest: "/opt/one/file.py"},
	}}})
	ps := sandbox.ProcessSpec{
		Args:  []string{"/bin/sh", "-c", "/usr/bin/python3 /code/handler.py; cat /opt/one/file.py >/dev/null && echo file=ok; touch /code/x 2>/dev/null || echo code=ro; cat > /data/in && echo data=rw"},
		Stdin: strings.NewReader("stdin payload"),
	}
	out, st := run(t, s, ps)
	if !st.Success() {
		t.Fatalf("%+v\n%s", st, out)
	}
	for _, want := range []string{"from handler\n", "file=ok\n", "code=ro\n", "data=rw\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(data, "in")); err != nil || string(b) != "stdin payload" {
		t.Errorf("stdin copy: %q %v", b, err)
	}
	// The sources were not written to (mount points live in the rootfs).
	if ents, _ := os.ReadDir(code); len(ents) != 1 {
		t.Errorf("bind source changed: %v", ents)
	}

	// A destination inside a read-only base directory that does not exist
	// there cannot be made without writing into the host's /usr.
	_, err := e.b.Create(context.Background(), "bad-bind", sandbox.Spec{Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: code, Dest: "/usr/sockfaas-nope"}}}})
	if !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("bind into /usr: %v, want ErrInvalid", err)
	}
	// Through a symlink of the base.
	_, err = e.b.Create(context.Background(), "bad-bind2", sandbox.Spec{Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: code, Dest: "/bin/x"}}}})
	if !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("bind through /bin symlink: %v, want ErrInvalid", err)
	}
}

func TestRootfsBase(t *testing.T) {
	e := newBackend(t)
	// A rootfs made of symlinks and binds of the host's own directories.
	base := t.TempDir()
	for _, d := range []string{"usr", "etc", "proc"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"bin", "lib", "lib64"} {
		if err := os.Symlink("/usr/"+l, filepath.Join(base, l)); err != nil {
			t.Fatal(err)
		}
	}
	s := e.create(t, "rootfs", sandbox.Spec{Root: fsbind.Spec{Base: base, Binds: []fsbind.Bind{{Source: "/usr", Dest: "/usr"}}}})
	out, st := run(t, s, sh("ls /etc | wc -l; echo ok"))
	if !st.Success() || out != "0\nok\n" {
		t.Fatalf("%+v %q", st, out)
	}
}

func TestEnvIsExactAndDirIsChecked(t *testing.T) {
	e := newBackend(t)
	ctx := context.Background()
	sorted := func(s string) string {
		l := strings.Split(strings.TrimSpace(s), "\n")
		sort.Strings(l)
		return strings.Join(l, ",")
	}
	// libcontainer would add HOME from /etc/passwd; the backend takes it out.
	s := e.create(t, "env", sandbox.Spec{})
	out, st := run(t, s, sandbox.ProcessSpec{Args: []string{"env"}, Env: []string{"A=1", "PATH=/usr/bin:/bin"}, Dir: "/tmp"})
	if !st.Success() || sorted(out) != "A=1,PATH=/usr/bin:/bin" {
		t.Errorf("env without HOME: %+v %q", st, out)
	}
	s2 := e.create(t, "env-empty-home", sandbox.Spec{})
	out, st = run(t, s2, sandbox.ProcessSpec{Args: []string{"/usr/bin/env"}, Env: []string{"HOME=", "B=2"}})
	if !st.Success() || sorted(out) != "B=2,HOME=" {
		t.Errorf("env with empty HOME: %+v %q", st, out)
	}
	s3 := e.create(t, "dir", sandbox.Spec{})
	for _, dir := range []string{"/nonexistent", "/tmp/nope", "/usr/bin/env"} {
		if _, err := s3.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/pwd"}, Dir: dir}); !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("Dir %s: %v, want ErrNotFound", dir, err)
		}
	}
	if _, err := s3.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/pwd"}, Env: []string{"NOEQUALS"}}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("bad env: %v, want ErrInvalid", err)
	}
	out, st = run(t, s3, sandbox.ProcessSpec{Args: []string{"/bin/pwd"}, Dir: "/usr/bin"})
	if !st.Success() || out != "/usr/bin\n" {
		t.Errorf("pwd: %+v %q", st, out)
	}
}

func TestErrors(t *testing.T) {
	e := newBackend(t)
	ctx := context.Background()
	e.create(t, "dup", sandbox.Spec{})
	if _, err := e.b.Create(ctx, "dup", sandbox.Spec{}); !errors.Is(err, sandbox.ErrExists) {
		t.Errorf("duplicate: %v, want ErrExists", err)
	}
	if _, err := e.b.Create(ctx, "../x", sandbox.Spec{}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("bad id: %v, want ErrInvalid", err)
	}
	if _, err := e.b.Create(ctx, "neg", sandbox.Spec{Limits: sandbox.Limits{Pids: -1}}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Errorf("bad spec: %v, want ErrInvalid", err)
	}
	s := e.create(t, "nf", sandbox.Spec{})
	if _, err := s.Start(ctx, sandbox.ProcessSpec{Args: []string{"/usr/bin/sockfaas-no-such"}}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("missing program: %v, want ErrNotFound", err)
	}
	if _, err := s.Start(ctx, sandbox.ProcessSpec{Args: []string{"sockfaas-no-such"}}); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("missing program in PATH: %v, want ErrNotFound", err)
	}
	if err := s.Pause(ctx); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("pause with nothing started: %v, want ErrState", err)
	}
	// After the failures the sandbox still works.
	if out, st := run(t, s, sandbox.ProcessSpec{Args: []string{"/bin/echo", "still"}}); out != "still\n" || !st.Success() {
		t.Errorf("after failed starts: %q %+v", out, st)
	}
	// A second backend on the same state directory is refused.
	if _, err := New(ctx, WithStateDir(e.state)); !errors.Is(err, sandbox.ErrBusy) {
		t.Errorf("second backend: %v, want ErrBusy", err)
	}
}

func TestExecAndSignal(t *testing.T) {
	e := newBackend(t)
	ctx := context.Background()
	s := e.create(t, "exec", sandbox.Spec{})
	p, err := s.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	// A second process joins the first one's namespaces.
	out, st := run(t, s, sh("cat /proc/1/cmdline | tr '\\0' ' '; hostname"))
	if !st.Success() || out != "/bin/sleep 100 exec\n" {
		t.Errorf("exec: %+v %q", st, out)
	}
	// sleep has no SIGTERM handler and is PID 1: the kernel would drop the
	// signal; the backend makes it act as on any process.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err = p.Wait(wctx)
	if err != nil || st.Signal != syscall.SIGTERM || st.Code != -1 {
		t.Fatalf("after SIGTERM: %+v %v", st, err)
	}
	// Wait is repeatable.
	if st2, err := p.Wait(wctx); err != nil || st2 != st {
		t.Errorf("second Wait: %+v %v", st2, err)
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("signal after exit: %v, want ErrState", err)
	}

	// A handled signal is delivered as is.
	s2 := e.create(t, "trap", sandbox.Spec{})
	// The first program is PID 1 here: there is no init to ask for.
	if _, err := s2.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/true"}, Init: true}); !errors.Is(err, sandbox.ErrUnsupported) {
		t.Errorf("Start with Init: %v, want ErrUnsupported", err)
	}
	var buf bytes.Buffer
	p2, err := s2.Start(ctx, sandbox.ProcessSpec{
		Args:   []string{"/bin/sh", "-c", "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.01; done"},
		Stdout: &buf,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return caught(p2.Pid())&(1<<(uint(syscall.SIGUSR1)-1)) != 0 })
	if err := p2.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	st, err = p2.Wait(wctx)
	if err != nil || st.Code != 7 || !strings.Contains(buf.String(), "got-usr1") {
		t.Fatalf("trapped USR1: %+v %v %q", st, err, buf.String())
	}
}

// caught is pid's mask of caught signals (SigCgt), 0 if unreadable.
func caught(pid int) uint64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return n
		}
	}
	return 0
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPauseAndStats(t *testing.T) {
	e := newBackend(t)
	ctx := context.Background()
	s := e.create(t, "pause", sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 64 << 20}})
	st0, err := s.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats before start: %v", err)
	}
	if st0.Pids != 0 || st0.OOMKills != 0 {
		t.Errorf("stats before start: %+v", st0)
	}
	if _, err := s.Start(ctx, sh("while :; do :; done")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := s.Pause(ctx); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if st, _ := os.ReadFile(filepath.Join(s.paths["freezer"], "freezer.state")); strings.TrimSpace(string(st)) != "FROZEN" {
		t.Errorf("freezer.state %q after Pause", st)
	}
	a, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	b, _ := s.Stats(ctx)
	if b.CPU != a.CPU {
		t.Errorf("CPU moved while paused: %v -> %v", a.CPU, b.CPU)
	}
	if err := s.Pause(ctx); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("second Pause: %v, want ErrState", err)
	}
	if _, err := s.Start(ctx, sh("true")); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("Start while paused: %v, want ErrState", err)
	}
	if err := s.Unpause(ctx); err != nil {
		t.Fatalf("Unpause: %v", err)
	}
	if err := s.Unpause(ctx); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("second Unpause: %v, want ErrState", err)
	}
	time.Sleep(100 * time.Millisecond)
	c, _ := s.Stats(ctx)
	if c.CPU <= b.CPU {
		t.Errorf("CPU did not move after Unpause: %v -> %v", b.CPU, c.CPU)
	}
	if c.MemoryBytes == 0 || c.MemoryPeakBytes < c.MemoryBytes || c.Pids != 1 {
		t.Errorf("stats %+v: want memory, peak >= memory, 1 task", c)
	}
	// Destroy works on a paused sandbox too.
	if err := s.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Destroy(ctx); err != nil {
		t.Fatalf("Destroy paused: %v", err)
	}
}

func TestOOM(t *testing.T) {
	e := newBackend(t)
	ctx := context.Background()
	s := e.create(t, "oom", sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 32 << 20}})
	out, st := run(t, s, sandbox.ProcessSpec{Args: []string{"/usr/bin/python3", "-c", "x = b'x' * (200 << 20); print(len(x))"}})
	if !st.OOMKilled || st.Signal != syscall.SIGKILL || st.Success() {
		t.Fatalf("status %+v, want OOM-killed by SIGKILL; output %q", st, out)
	}
	stats, err := s.Stats(ctx)
	if err != nil || stats.OOMKills == 0 {
		t.Errorf("stats %+v %v: want an OOM kill counted", stats, err)
	}
}

func TestDestroy(t *testing.T) {
	e := newBackend(t)
	ctx := context.Background()
	s := e.create(t, "destroy", sandbox.Spec{})
	p, err := s.Start(ctx, sh("sleep 100 & sleep 100 & wait"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { st, _ := s.Stats(ctx); return st.Pids == 3 })
	// The pids of everything in the sandbox, to check they are gone.
	pids := cgroupPids(s.paths)
	info := s.Info()
	if len(info.Cgroups) == 0 || info.Root != "" || len(info.Pids) != 1 || info.Pids[0] != p.Pid() {
		t.Fatalf("info %+v", info)
	}
	if err := s.Destroy(ctx); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, 0); err == nil {
			// It may be a zombie of a parent in the (gone) namespace only if
			// someone else reaps it; ours are reaped by Destroy.
			t.Errorf("pid %d still exists", pid)
		}
	}
	for _, c := range info.Cgroups {
		if _, err := os.Stat(c); err == nil {
			t.Errorf("cgroup %s left", c)
		}
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*" + e.parent + "/destroy"); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
	for _, d := range []string{s.rec.Rootfs, s.rec.Scratch, s.recFile, filepath.Join(e.state, containersDir, "destroy")} {
		if _, err := os.Lstat(d); err == nil {
			t.Errorf("%s left", d)
		}
	}
	if st, err := p.Wait(ctx); err != nil || st.Signal != syscall.SIGKILL {
		t.Errorf("Wait after Destroy: %+v %v", st, err)
	}
	if err := s.Destroy(ctx); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
	if _, err := s.Start(ctx, sh("true")); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("Start after Destroy: %v", err)
	}
	if err := s.Pause(ctx); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("Pause after Destroy: %v", err)
	}
	if _, err := s.Stats(ctx); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("Stats after Destroy: %v", err)
	}
	// The id is free again.
	s2 := e.create(t, "destroy", sandbox.Spec{})
	if out, st := run(t, s2, sandbox.ProcessSpec{Args: []string{"/bin/echo", "again"}}); out != "again\n" || !st.Success() {
		t.Errorf("reused id: %q %+v", out, st)
	}
}

func TestCleanupAfterCrash(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	state := testutil.StateDir(t)
	parent := "/" + testutil.UniqueName(t)
	b, err := New(ctx, WithStateDir(state), WithCgroupParent(parent), WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Create(ctx, "crash", sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	paused, err := b.Create(ctx, "crash-paused", sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	pp, err := paused.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/sleep", "100"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := paused.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, "crash-idle", sandbox.Spec{}); err != nil {
		t.Fatal(err)
	}
	rootfs := sb.(*Sandbox).rec.Rootfs

	b.abandon() // as if the process had died

	if err := Cleanup(ctx, state, testLogger()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	for _, proc := range []sandbox.Process{p, pp} {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := proc.Wait(wctx)
		cancel()
		if err != nil || st.Signal != syscall.SIGKILL {
			t.Errorf("process after Cleanup: %+v %v", st, err)
		}
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*" + parent); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
	if _, err := os.Stat(rootfs); err == nil {
		t.Errorf("rootfs %s left", rootfs)
	}
	ents, _ := os.ReadDir(state)
	for _, de := range ents {
		if de.Name() != lockFile {
			t.Errorf("left in state dir: %s", de.Name())
		}
	}
	// Cleanup is repeatable, and New on the directory works again.
	if err := Cleanup(ctx, state, testLogger()); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
	b2, err := New(ctx, WithStateDir(state), WithCgroupParent(parent))
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b2.Create(ctx, "late", sandbox.Spec{}); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("Create after Close: %v, want ErrState", err)
	}
}

// BenchmarkLifecycle measures a whole sandbox life: create, run /bin/true,
// wait, destroy.
func BenchmarkLifecycle(b *testing.B) {
	e := newBackend(b)
	ctx := context.Background()
	ps := sandbox.ProcessSpec{Args: []string{"/bin/true"}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := e.b.Create(ctx, fmt.Sprintf("bench-%d", i), sandbox.Spec{})
		if err != nil {
			b.Fatal(err)
		}
		p, err := s.Start(ctx, ps)
		if err != nil {
			b.Fatal(err)
		}
		if st, err := p.Wait(ctx); err != nil || !st.Success() {
			b.Fatalf("%+v %v", st, err)
		}
		if err := s.Destroy(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
