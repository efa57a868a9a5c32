package sbinit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/internal/testutil"
)

const (
	nobody  = 65534
	allNS   = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS
	testEnv = "PATH=/usr/bin:/bin"
)

func newLauncher(tb testing.TB) *Launcher {
	tb.Helper()
	l, err := NewLauncher()
	if errors.Is(err, errors.ErrUnsupported) {
		tb.Skip(err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// minimalRoot builds a throwaway sandbox root: a tmpfs with the host's /usr
// bound read-only, the usual merged-/usr symlinks, empty proc, tmp, etc, and
// dev/null. Everything is lazily unmounted when the test ends, and the test
// fails if the host's mount table changed.
func minimalRoot(tb testing.TB) string {
	tb.Helper()
	testutil.RequiresRoot(tb)
	before := mountPoints(tb)
	tb.Cleanup(func() {
		if after := mountPoints(tb); !slices.Equal(before, after) {
			tb.Errorf("host mount table changed:\nbefore %v\nafter  %v", before, after)
		}
	})
	root := filepath.Join(testutil.StateDir(tb), "root")
	must(tb, os.Mkdir(root, 0o755))
	must(tb, unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID, "mode=755,size=8m"))
	tb.Cleanup(func() {
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmount %s: %v", root, err)
		}
	})
	for _, d := range []string{"usr", "proc", "tmp", "dev", "etc"} {
		must(tb, os.Mkdir(filepath.Join(root, d), 0o755))
	}
	must(tb, os.Chmod(filepath.Join(root, "tmp"), 0o1777))
	for _, l := range []string{"bin", "lib", "lib64", "sbin"} {
		must(tb, os.Symlink("usr/"+l, filepath.Join(root, l)))
	}
	usr := filepath.Join(root, "usr")
	must(tb, unix.Mount("/usr", usr, "", unix.MS_BIND, ""))
	must(tb, unix.Mount("", usr, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""))
	null := filepath.Join(root, "dev/null")
	must(tb, os.WriteFile(null, nil, 0o666))
	must(tb, unix.Mount("/dev/null", null, "", unix.MS_BIND, ""))
	return root
}

func mountPoints(tb testing.TB) []string {
	tb.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		// Test state directories come and go with tests of other packages
		// running in parallel; testutil.StateDir checks each for leaks.
		if f := strings.Fields(line); len(f) > 8 && !strings.HasPrefix(f[4], "/run/sockfaas-test-") && !strings.HasPrefix(f[4], "/run/sockfaas-bench-") {
			out = append(out, f[4]+" "+f[8]) // mount point and type
		}
	}
	slices.Sort(out)
	return out
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// sandboxConfig runs args as nobody in root with mount, PID, IPC and UTS
// namespaces.
func sandboxConfig(root string, args ...string) Config {
	return Config{
		Root:       root,
		Cloneflags: allNS,
		Hostname:   "sbx",
		UID:        nobody,
		GID:        nobody,
		Args:       args,
		Env:        []string{testEnv},
		CgroupFD:   -1,
	}
}

// run starts cfg, waits, and returns its stdout and status; stderr is logged.
func run(tb testing.TB, l *Launcher, cfg Config) (string, syscall.WaitStatus) {
	tb.Helper()
	var stdout, stderr bytes.Buffer
	cfg.Stdout, cfg.Stderr = &stdout, &stderr
	p, err := l.Start(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ws, err := p.Wait()
	if err != nil {
		tb.Fatal(err)
	}
	assertGone(tb, p.Pid())
	if stderr.Len() > 0 {
		tb.Logf("stderr: %s", stderr.String())
	}
	return stdout.String(), ws
}

// assertGone fails unless pid is no longer a process (not even a zombie).
func assertGone(tb testing.TB, pid int) {
	tb.Helper()
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		tb.Errorf("pid %d still exists after Wait (kill 0: %v)", pid, err)
	}
}

func wantExit(tb testing.TB, ws syscall.WaitStatus, code int) {
	tb.Helper()
	if !ws.Exited() || ws.ExitStatus() != code {
		tb.Errorf("status %v (%#x), want exit %d", describe(ws), uint32(ws), code)
	}
}

func describe(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("status %#x", uint32(ws))
}

func TestEchoInHostRoot(t *testing.T) {
	testutil.RequiresRoot(t)
	l := newLauncher(t)
	out, ws := run(t, l, Config{Args: []string{"echo", "hi"}, Env: []string{testEnv}, UID: nobody, GID: nobody, CgroupFD: -1})
	wantExit(t, ws, 0)
	if out != "hi\n" {
		t.Errorf("stdout %q, want %q", out, "hi\n")
	}
}

func TestEchoInRoot(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	for _, flags := range []uintptr{unix.CLONE_NEWNS, allNS, allNS | unix.CLONE_NEWNET} {
		t.Run(fmt.Sprintf("flags=%#x", flags), func(t *testing.T) {
			cfg := sandboxConfig(root, "/bin/echo", "hi")
			cfg.Cloneflags = flags
			out, ws := run(t, l, cfg)
			wantExit(t, ws, 0)
			if out != "hi\n" {
				t.Errorf("stdout %q, want %q", out, "hi\n")
			}
		})
	}
}

func TestPIDNamespace(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	out, ws := run(t, l, sandboxConfig(root, "sh", "-c", "echo $$; ls /proc"))
	wantExit(t, ws, 0)
	lines := strings.Fields(out)
	if len(lines) == 0 || lines[0] != "2" {
		t.Fatalf("program's pid: output %q, want 2 first (the helper is 1)", out)
	}
	var pids []string
	for _, f := range lines[1:] {
		if _, err := strconv.Atoi(f); err == nil {
			pids = append(pids, f)
		}
	}
	// init, sh, and ls if sh forked for it.
	if !slices.Contains(pids, "1") || !slices.Contains(pids, "2") || len(pids) > 3 {
		t.Errorf("/proc shows pids %v, want 1, 2 and at most one more", pids)
	}
}

func TestHostnameAndIdentity(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	host, _ := os.Hostname()
	out, ws := run(t, l, sandboxConfig(root, "sh", "-c", "cat /proc/sys/kernel/hostname; id -u; id -g; id -G; pwd"))
	wantExit(t, ws, 0)
	if want := "sbx\n65534\n65534\n65534\n/\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if now, _ := os.Hostname(); now != host {
		t.Errorf("host's hostname changed from %q to %q", host, now)
	}
}

func TestEnvAndDir(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)

	cfg := sandboxConfig(root, "sh", "-c", `echo "$FOO"; pwd`)
	cfg.Env = []string{testEnv, "FOO=bar"}
	cfg.Dir = "/tmp"
	out, ws := run(t, l, cfg)
	wantExit(t, ws, 0)
	if want := "bar\n/tmp\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}

	// nil Env is empty, not the host's; the default PATH still finds env.
	cfg = sandboxConfig(root, "env")
	cfg.Env = nil
	out, ws = run(t, l, cfg)
	wantExit(t, ws, 0)
	if out != "" {
		t.Errorf("environment %q, want none", out)
	}

	cfg = sandboxConfig(root, "cat")
	cfg.Stdin = strings.NewReader("from stdin")
	out, ws = run(t, l, cfg)
	wantExit(t, ws, 0)
	if out != "from stdin" {
		t.Errorf("stdout %q, want stdin echoed", out)
	}
}

func TestPrivileges(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	for _, uid := range []uint32{nobody, 0} {
		t.Run("uid="+strconv.Itoa(int(uid)), func(t *testing.T) {
			cfg := sandboxConfig(root, "grep", "-E", "^(Cap|NoNewPrivs)", "/proc/self/status")
			cfg.UID, cfg.GID = uid, uid
			out, ws := run(t, l, cfg)
			wantExit(t, ws, 0)
			got := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				k, v, _ := strings.Cut(line, ":")
				got[k] = strings.TrimSpace(v)
			}
			wantNoCapabilities(t, got)
		})
	}
}

func TestExitCode(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	for _, flags := range []uintptr{unix.CLONE_NEWNS, allNS} {
		cfg := sandboxConfig(root, "sh", "-c", "exit 7")
		cfg.Cloneflags = flags
		_, ws := run(t, l, cfg)
		wantExit(t, ws, 7)
	}
}

func TestSignal(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	cases := []struct {
		name  string
		flags uintptr
		sig   syscall.Signal
	}{
		{"forwarded", allNS, syscall.SIGTERM},
		{"direct", unix.CLONE_NEWNS, syscall.SIGTERM},
		// SIGKILL cannot be forwarded: it kills the helper, and with it
		// the namespace; the status is then the helper's.
		{"kill-init", allNS, syscall.SIGKILL},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := sandboxConfig(root, "sleep", "100")
			cfg.Cloneflags = c.flags
			p, err := l.Start(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			must(t, p.Signal(c.sig))
			ws, err := p.Wait()
			must(t, err)
			if !ws.Signaled() || ws.Signal() != c.sig {
				t.Errorf("status %s, want signal %v", describe(ws), c.sig)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v to die", d)
			}
			assertGone(t, p.Pid())
			if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
				t.Errorf("Signal after Wait: %v, want os.ErrProcessDone", err)
			}
		})
	}
}

// When the program exits, whatever it left running in its PID namespace goes.
func TestNoOrphansSurvive(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	_, ws := run(t, l, sandboxConfig(root, "sh", "-c", "sleep 4321 & exit 3"))
	wantExit(t, ws, 3)
	if pids := findProcesses("sleep\x004321\x00"); len(pids) > 0 {
		t.Errorf("orphans still running: %v", pids)
		for _, p := range pids {
			_ = unix.Kill(p, unix.SIGKILL)
		}
	}
}

func findProcesses(cmdline string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && string(b) == cmdline {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestMissingProgram(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	for _, flags := range []uintptr{unix.CLONE_NEWNS, allNS} {
		for _, name := range []string{"nosuch", "/nosuch"} {
			cfg := sandboxConfig(root, name)
			cfg.Cloneflags = flags
			p, err := l.Start(context.Background(), cfg)
			if err == nil {
				p.Wait()
				t.Fatalf("flags %#x: %s started", flags, name)
			}
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("flags %#x: error %v does not match fs.ErrNotExist", flags, err)
			}
			if want := fmt.Sprintf("sandbox init: exec %q: no such file or directory", name); err.Error() != want {
				t.Errorf("flags %#x: error %q, want %q", flags, err, want)
			}
		}
	}
	// Entries that are missing or not directories are skipped, as execvp does.
	cfg := sandboxConfig(root, "true")
	cfg.Env = []string{"PATH=/nonexistent:/dev/null:/usr/bin"}
	_, ws := run(t, l, cfg)
	wantExit(t, ws, 0)
}

// badRoot is a root the helper must refuse, and the step and errno it
// must refuse it with.
type badRoot struct {
	root, step string
	errno      syscall.Errno
}

// badRoots makes roots that are not mount points (inside a tmpfs, and on
// the host's root file system), a mount point without a proc directory,
// and names one that does not exist, all under dir. notMount is the first.
func badRoots(t *testing.T) (cases []badRoot, notMount, dir string) {
	t.Helper()
	dir = testutil.StateDir(t)
	tmpfs, noProc := filepath.Join(dir, "fs"), filepath.Join(dir, "noproc")
	for _, d := range []string{tmpfs, noProc} {
		must(t, os.Mkdir(d, 0o755))
		must(t, unix.Mount("tmpfs", d, "tmpfs", 0, "size=1m"))
		t.Cleanup(func() { must(t, unix.Unmount(d, unix.MNT_DETACH)) })
	}
	notMount, onHostRoot := filepath.Join(tmpfs, "plain"), filepath.Join(dir, "plain")
	must(t, os.MkdirAll(filepath.Join(notMount, "proc"), 0o755))
	must(t, os.MkdirAll(filepath.Join(onHostRoot, "proc"), 0o755))
	cases = []badRoot{
		{notMount, "root is not a mount point", unix.EINVAL},
		{onHostRoot, "root is not a mount point", unix.EINVAL},
		{noProc, "mount proc", unix.ENOENT},
		{filepath.Join(dir, "missing"), "open root", unix.ENOENT},
		{filepath.Join(dir, "plain", "proc", "nosuch"), "open root", unix.ENOENT},
	}
	return cases, notMount, dir
}

func TestBadRoot(t *testing.T) {
	testutil.RequiresRoot(t)
	cases, notMount, dir := badRoots(t)
	l := newLauncher(t)
	before := mountPoints(t)
	for _, c := range cases {
		p, err := l.Start(context.Background(), sandboxConfig(c.root, "true"))
		if err == nil {
			p.Wait()
			t.Fatalf("root %s: started", c.root)
		}
		var se *StepError
		if !errors.As(err, &se) || se.Step != c.step || !errors.Is(err, c.errno) {
			t.Errorf("root %s: error %q, want step %q failing with %v", c.root, err, c.step, c.errno)
		}
	}
	if want := "sandbox init: root is not a mount point: invalid argument"; !strings.Contains(fmt.Sprint(mustFail(l.Start(context.Background(), sandboxConfig(notMount, "true")))), want) {
		t.Errorf("error text does not contain %q", want)
	}
	if after := mountPoints(t); !slices.Equal(before, after) {
		t.Errorf("host mount table changed:\nbefore %v\nafter  %v", before, after)
	}
	if leaked := testutil.MountsUnder(dir); len(leaked) != 2 {
		t.Errorf("mounts under %s: %v, want only the test's two tmpfs", dir, leaked)
	}
}

func mustFail(p *Process, err error) error {
	if err == nil {
		p.Wait()
	}
	return err
}

func TestInvalidConfig(t *testing.T) {
	l := newLauncher(t)
	for name, cfg := range map[string]Config{
		"no args":         {CgroupFD: -1},
		"root without ns": {Root: "/", Args: []string{"true"}, CgroupFD: -1},
		"user ns":         {Cloneflags: unix.CLONE_NEWUSER, Args: []string{"true"}, CgroupFD: -1},
		"long hostname":   {Cloneflags: unix.CLONE_NEWUTS, Hostname: strings.Repeat("x", 65), Args: []string{"true"}, CgroupFD: -1},
	} {
		if _, err := l.Start(context.Background(), cfg); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("%s: error %v, want fs.ErrInvalid", name, err)
		}
	}
}

func TestAttach(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	var attached int
	cfg := sandboxConfig(root, "true")
	cfg.Attach = func(pid int) error {
		attached = pid
		// Still the helper, blocked before its first step: no program
		// exec'd, no child forked.
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return err
		}
		if !strings.HasPrefix(string(cmdline), "sockfaas-init\x00") {
			t.Errorf("at Attach, pid %d runs %q", pid, cmdline)
		}
		children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(children)) > 0 {
			t.Errorf("at Attach, pid %d already has children %q", pid, children)
		}
		return nil
	}
	p, err := l.Start(context.Background(), cfg)
	must(t, err)
	if attached != p.Pid() {
		t.Errorf("Attach got pid %d, process is %d", attached, p.Pid())
	}
	ws, err := p.Wait()
	must(t, err)
	wantExit(t, ws, 0)

	// A failed Attach aborts the start and reaps the helper.
	errAttach := errors.New("attach refused")
	cfg.Attach = func(pid int) error { attached = pid; return errAttach }
	if _, err := l.Start(context.Background(), cfg); !errors.Is(err, errAttach) {
		t.Errorf("error %v, want %v", err, errAttach)
	}
	assertGone(t, attached)
}

func TestContextEndsStart(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var pid int
	cfg := sandboxConfig(root, "true")
	cfg.Attach = func(p int) error { pid = p; cancel(); return nil }
	if _, err := l.Start(ctx, cfg); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want context.Canceled", err)
	}
	assertGone(t, pid)

	if _, err := l.Start(ctx, cfg); !errors.Is(err, context.Canceled) {
		t.Errorf("with a done context: error %v, want context.Canceled", err)
	}

	// The program outlives the context that started it.
	ctx, cancel = context.WithCancel(context.Background())
	p, err := l.Start(ctx, sandboxConfig(root, "sh", "-c", "sleep 0.2; exit 5"))
	must(t, err)
	cancel()
	ws, err := p.Wait()
	must(t, err)
	wantExit(t, ws, 5)
}

func TestNetworkNamespace(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	const script = `
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
c = socket.create_connection(s.getsockname(), timeout=2)
print("connected")
print(sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
`
	cfg := sandboxConfig(root, "python3", "-c", script)
	cfg.Cloneflags |= unix.CLONE_NEWNET
	out, ws := run(t, l, cfg)
	wantExit(t, ws, 0)
	if want := "connected\n['lo']\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestCgroupFD(t *testing.T) {
	testutil.RequiresRoot(t)
	var mnt string
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			mnt = dir
			break
		}
	}
	if mnt == "" {
		t.Skip("no cgroup v2 hierarchy mounted")
	}
	name := testutil.UniqueName(t)
	dir := filepath.Join(mnt, name)
	must(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	})
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(fd)

	root := minimalRoot(t)
	l := newLauncher(t)
	cfg := sandboxConfig(root, "cat", "/proc/self/cgroup")
	cfg.CgroupFD = fd
	out, ws := run(t, l, cfg)
	wantExit(t, ws, 0)
	if want := "0::/" + name + "\n"; !strings.Contains(out, want) {
		t.Errorf("/proc/self/cgroup %q does not contain %q", out, want)
	}
}

// TestCgroupProcs: the helper joins the cgroups whose cgroup.procs files
// it is given before the program runs, and a file it cannot write fails
// the start at that step.
func TestCgroupProcs(t *testing.T) {
	testutil.RequiresRoot(t)
	name := testutil.UniqueName(t)
	var procs []*os.File
	for _, mnt := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st unix.Statfs_t
		if unix.Statfs(mnt, &st) != nil || (st.Type != unix.CGROUP_SUPER_MAGIC && st.Type != unix.CGROUP2_SUPER_MAGIC) {
			continue
		}
		dir := filepath.Join(mnt, name)
		must(t, os.Mkdir(dir, 0o755))
		t.Cleanup(func() {
			if err := os.Remove(dir); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		})
		f, err := os.OpenFile(filepath.Join(dir, "cgroup.procs"), os.O_WRONLY, 0)
		must(t, err)
		t.Cleanup(func() { f.Close() })
		procs = append(procs, f)
	}
	if len(procs) == 0 {
		t.Skip("no cgroup hierarchy mounted")
	}

	root := minimalRoot(t)
	l := newLauncher(t)
	cfg := sandboxConfig(root, "cat", "/proc/self/cgroup")
	cfg.CgroupProcs = procs
	out, ws := run(t, l, cfg)
	wantExit(t, ws, 0)
	if n := strings.Count(out, ":/"+name+"\n"); n != len(procs) {
		t.Errorf("/proc/self/cgroup %q: in %d cgroups named %s, want %d", out, n, name, len(procs))
	}
	// The caller's files stay open.
	if _, err := procs[0].Stat(); err != nil {
		t.Errorf("cgroup.procs file closed by Start: %v", err)
	}

	ro, err := os.Open(procs[0].Name())
	must(t, err)
	defer ro.Close()
	cfg.CgroupProcs = []*os.File{ro}
	_, err = l.Start(context.Background(), cfg)
	var se *StepError
	if !errors.As(err, &se) || se.Step != "join cgroup" || !errors.Is(err, unix.EBADF) {
		t.Errorf("read-only cgroup.procs: error %v, want step %q failing with EBADF", err, "join cgroup")
	}
}

func TestConcurrentStarts(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			cfg := sandboxConfig(root, "sh", "-c", fmt.Sprintf("echo %d; exit %d", i, i))
			cfg.Stdout = &out
			p, err := l.Start(context.Background(), cfg)
			if err != nil {
				t.Error(err)
				return
			}
			ws, err := p.Wait()
			if err != nil {
				t.Error(err)
				return
			}
			if !ws.Exited() || ws.ExitStatus() != i || out.String() != fmt.Sprintf("%d\n", i) {
				t.Errorf("run %d: %s, stdout %q", i, describe(ws), out.String())
			}
		}()
	}
	wg.Wait()
}

func TestLauncherSealedAndClosed(t *testing.T) {
	l := newLauncher(t)
	fd := int(l.exe.Fd())
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	must(t, err)
	const want = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if seals&want != want {
		t.Errorf("seals %#x, want %#x", seals, want)
	}
	if _, err := unix.Write(fd, []byte("x")); err == nil {
		t.Error("helper memfd is writable")
	}
	must(t, l.Close())
	must(t, l.Close())
	if _, err := l.Start(context.Background(), Config{Args: []string{"true"}, CgroupFD: -1}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Start after Close: %v, want os.ErrClosed", err)
	}
}

// BenchmarkStartWait measures start to reaped exit of /bin/true: in a
// minimal root with mount, PID, IPC and UTS namespaces; through the helper
// with no namespaces; and with plain os/exec for comparison.
func BenchmarkStartWait(b *testing.B) {
	root := minimalRoot(b)
	l := newLauncher(b)
	bench := func(b *testing.B, cfg Config) {
		for b.Loop() {
			p, err := l.Start(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			if ws, err := p.Wait(); err != nil || ws != 0 {
				b.Fatal(describe(ws), err)
			}
		}
	}
	b.Run("sbinit-mnt-pid-ipc-uts", func(b *testing.B) { bench(b, sandboxConfig(root, "/bin/true")) })
	b.Run("sbinit-mnt-pid-ipc-uts-net", func(b *testing.B) {
		cfg := sandboxConfig(root, "/bin/true")
		cfg.Cloneflags |= unix.CLONE_NEWNET
		bench(b, cfg)
	})
	b.Run("sbinit-no-ns", func(b *testing.B) {
		bench(b, Config{Args: []string{"/bin/true"}, UID: nobody, GID: nobody, CgroupFD: -1})
	})
	b.Run("os-exec", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestJoinNetNS: a program started with NetNS lives in that network
// namespace (here: a fresh one held by a sleeping process), not the host's.
func TestJoinNetNS(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	holder := exec.Command("unshare", "--net", "sleep", "30")
	must(t, holder.Start())
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	want := ""
	for i := 0; i < 100 && (want == "" || strings.HasPrefix(want, "net:[4026531")); i++ {
		// unshare execs sleep after entering the namespace; wait for that.
		time.Sleep(5 * time.Millisecond)
		want, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid))
	}
	hostNS, _ := os.Readlink("/proc/self/ns/net")
	if want == hostNS {
		t.Fatal("holder did not enter a new network namespace")
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid))
	must(t, err)
	defer f.Close()

	cfg := sandboxConfig(root, "/bin/sh", "-c", "readlink /proc/self/ns/net")
	cfg.NetNS = f
	out, ws := run(t, l, cfg)
	if ws != 0 || strings.TrimSpace(out) != want {
		t.Fatalf("got %q (status %v), want %q", out, describe(ws), want)
	}

	cfg.Cloneflags |= unix.CLONE_NEWNET
	if _, err := l.Start(context.Background(), cfg); !errors.Is(err, fs.ErrInvalid) {
		t.Fatalf("NetNS with CLONE_NEWNET: got %v, want fs.ErrInvalid", err)
	}
}

// TestPrivileged: a privileged program keeps uid 0 and its capabilities
// (a zygote needs them to set up its children), still in its own root.
func TestPrivileged(t *testing.T) {
	root := minimalRoot(t)
	l := newLauncher(t)
	cfg := sandboxConfig(root, "/bin/sh", "-c", "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; test -e /work && echo host-visible; true")
	cfg.Privileged = true
	out, ws := run(t, l, cfg)
	if ws != 0 {
		t.Fatalf("status %v: %s", describe(ws), out)
	}
	if !strings.HasPrefix(out, "0\n") || strings.Contains(out, "CapEff:\t0000000000000000") || !strings.Contains(out, "NoNewPrivs:\t0") || strings.Contains(out, "host-visible") {
		t.Fatalf("privileged program: %q", out)
	}
}
