package lean_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/internal/mountinfo"
	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/cgpool"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/sandbox/sandboxtest"
)

func newBackend(t *testing.T, state, cgroup string) *lean.Backend {
	t.Helper()
	b, err := lean.New(context.Background(), lean.WithStateDir(state), lean.WithCgroupName(cgroup), lean.WithPoolSize(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) }) // idempotent
	return b
}

func TestConformance(t *testing.T) {
	testutil.RequiresRoot(t)
	sandboxtest.Run(t, func(t *testing.T) sandbox.Backend {
		return newBackend(t, testutil.StateDir(t), "/"+testutil.UniqueName(t))
	})
}

func TestStateDirHasOneOwner(t *testing.T) {
	testutil.RequiresRoot(t)
	state, cg := testutil.StateDir(t), "/"+testutil.UniqueName(t)
	b := newBackend(t, state, cg)
	if _, err := lean.New(context.Background(), lean.WithStateDir(state), lean.WithCgroupName(cg)); !errors.Is(err, sandbox.ErrBusy) {
		t.Fatalf("second owner: got %v, want ErrBusy", err)
	}
	if err := lean.Cleanup(context.Background(), state, cg, zerolog.Nop()); !errors.Is(err, sandbox.ErrBusy) {
		t.Fatalf("cleanup of a live state dir: got %v, want ErrBusy", err)
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state dir still there after Close: %v", err)
	}
}

// TestCgroupNameHasOneOwner: a second backend with its own state dir but
// the first one's cgroup name is refused, and the first one's sandboxes
// live on (each backend kills whatever it finds under its name).
func TestCgroupNameHasOneOwner(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	cg := "/" + testutil.UniqueName(t)
	a := newBackend(t, testutil.StateDir(t), cg)
	sb, err := a.Create(ctx, "a", sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/sleep", "30"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lean.New(ctx, lean.WithStateDir(testutil.StateDir(t)), lean.WithCgroupName(cg)); !errors.Is(err, sandbox.ErrBusy) {
		t.Fatalf("second backend on the same cgroup name: %v, want ErrBusy", err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if st, err := p.Wait(short); err == nil {
		t.Fatalf("the first backend's sandbox died: %+v", st)
	}
	// A name that holds someone else's cgroups is refused, not cleaned.
	if _, err := lean.New(ctx, lean.WithStateDir(testutil.StateDir(t)), lean.WithCgroupName("/")); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("cgroup name /: %v, want ErrInvalid", err)
	}
}

// crashChildEnv makes the test binary act as a process that holds sandboxes
// until it is killed.
const crashChildEnv = "SOCKFAAS_LEAN_CRASH_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(crashChildEnv); spec != "" {
		os.Exit(crashChild(spec))
	}
	os.Exit(m.Run())
}

// crashChild creates three sandboxes with a sleeping process each, prints
// their host pids and root paths, and waits to be SIGKILLed.
func crashChild(spec string) int {
	state, cg, _ := strings.Cut(spec, ",")
	ctx := context.Background()
	b, err := lean.New(ctx, lean.WithStateDir(state), lean.WithCgroupName(cg), lean.WithPoolSize(2))
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	for i := 0; i < 3; i++ {
		sb, err := b.Create(ctx, fmt.Sprintf("crash-%d", i), sandbox.Spec{Limits: sandbox.Limits{Pids: 16}})
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		// A process tree: a shell with a background sleep, both to be killed.
		p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/sh", "-c", "sleep 1000 & sleep 1000"}})
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Printf("sandbox %d %s\n", p.Pid(), sb.Info().Root)
	}
	fmt.Println("ready")
	select {}
}

func TestCleanupAfterSIGKILL(t *testing.T) {
	testutil.RequiresRoot(t)
	state, cg := testutil.StateDir(t), "/"+testutil.UniqueName(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+state+","+cg)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	var roots []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			break
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "sandbox" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child: %s", line)
		}
		pid, _ := strconv.Atoi(f[1])
		pids, roots = append(pids, pid), append(roots, f[2])
	}
	if len(pids) != 3 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child did not get ready: %v", sc.Err())
	}

	// The crash: no deferred cleanup, no Close.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// What it left is really there before cleanup.
	if len(testutil.MountsUnder(state)) == 0 {
		t.Fatal("expected the killed process's roots to still be mounted")
	}
	cgDirs, _ := filepath.Glob("/sys/fs/cgroup/*" + cg)
	if len(cgDirs) == 0 {
		cgDirs, _ = filepath.Glob("/sys/fs/cgroup" + cg)
	}
	if len(cgDirs) == 0 {
		t.Fatal("expected the killed process's cgroups to still exist")
	}

	// Every process in the pool's cgroups, parked init helpers included
	// (they wait in pooled cgroups of their own), must go too.
	members, _ := filepath.Glob(filepath.Join(cgDirs[0], "*", "cgroup.procs"))
	for _, f := range members {
		data, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(field); err == nil && !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	if len(pids) < 4 {
		t.Errorf("pool cgroups held %v: want the 3 sandboxes and the parked helpers", pids)
	}

	if err := lean.Cleanup(ctx, state, cg, zerolog.Nop()); err != nil {
		t.Fatalf("cleanup: %v", err)
	}

	// The sandbox processes were reparented to the host's init, which reaps
	// them in its own time: dead or a zombie is gone enough.
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("sandbox process %d survived cleanup", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if m := testutil.MountsUnder(state); len(m) != 0 {
		t.Fatalf("mounts left after cleanup: %v", m)
	}
	for _, d := range cgDirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("cgroup %s left after cleanup", d)
		}
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state dir left after cleanup: %v", err)
	}
	_ = roots
}

func TestNewCleansUpAfterCrash(t *testing.T) {
	testutil.RequiresRoot(t)
	// New itself cleans up after a crashed owner of the same state dir.
	state, cg := testutil.StateDir(t), "/"+testutil.UniqueName(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+state+","+cg)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "ready" {
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()

	var logged testutil.SyncBuffer // the backend logs from its own goroutines too
	b, err := lean.New(context.Background(), lean.WithStateDir(state), lean.WithCgroupName(cg),
		lean.WithPoolSize(4), lean.WithLogger(zerolog.New(&logged)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	if n := len(b.List()); n != 0 {
		t.Fatalf("new backend sees %d sandboxes", n)
	}
	// Cleanup named each sandbox it found from its record.
	if !strings.Contains(logged.String(), `"sandbox":"crash-0","cgroup":"`+cg+`/`) {
		t.Errorf("cleanup log does not name crash-0 and its cgroup under %s:\n%s", cg, logged.String())
	}
	// None of the crashed process's roots is mounted any more.
	for _, m := range testutil.MountsUnder(state) {
		if strings.Contains(m, "/crash-") {
			t.Fatalf("mount left from the crashed process: %s", m)
		}
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := testutil.MountsUnder(state); len(m) != 0 {
		t.Fatalf("mounts after Close: %v", m)
	}
}

// alive is true while pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i < 0 || i+2 >= len(data) || data[i+2] != 'Z'
}

// TestZygoteHooks covers what a zygote needs from a lean sandbox: a
// privileged start, a detached copy of the root, the cgroup.procs files.
func TestZygoteHooks(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	b := newBackend(t, testutil.StateDir(t), "/"+testutil.UniqueName(t))
	sbx, err := b.Create(ctx, "zyg", sandbox.Spec{Root: fsbind.Spec{MountPoints: []string{"/late"}}})
	if err != nil {
		t.Fatal(err)
	}
	sb := sbx.(*lean.Sandbox)
	defer sb.Destroy(ctx)

	var out strings.Builder
	p, err := sb.StartPrivileged(ctx, sandbox.ProcessSpec{Args: []string{"/bin/sh", "-c", "id -u; grep ^CapEff /proc/self/status"}, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(ctx); err != nil || !st.Success() {
		t.Fatalf("privileged start: %+v %v", st, err)
	}
	if !strings.HasPrefix(out.String(), "0\n") || strings.Contains(out.String(), "CapEff:\t0000000000000000") {
		t.Fatalf("privileged process: %q", out.String())
	}

	if err := sb.Bind("/usr/share/doc", "/late"); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/ls", "/late"}, Stdout: &out}); err != nil {
		t.Fatal(err)
	} else if st, err := p.Wait(ctx); err != nil || !st.Success() || !strings.Contains(out.String(), "python3") {
		t.Fatalf("late bind not visible: %+v %v %q", st, err, out.String())
	}
	tree, err := sb.CloneRoot()
	if err != nil {
		t.Fatal(err)
	}
	tree.Close()
	procs, err := sb.OpenCgroupProcs()
	if err != nil || len(procs) == 0 {
		t.Fatalf("cgroup procs: %v %v", procs, err)
	}
	for _, f := range procs {
		f.Close()
	}
	if err := sb.Bind("/usr/share", "/code"); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("Bind to a destination that is no mount point: %v", err)
	}
	sb.Adopt(12345)
	if pids := sb.Info().Pids; len(pids) != 2 || pids[1] != 12345 {
		t.Fatalf("pids after Adopt: %v", pids)
	}
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.CloneRoot(); !errors.Is(err, sandbox.ErrState) {
		t.Fatalf("CloneRoot after Destroy: %v", err)
	}
}

// TestConformanceCgroupV2 runs the conformance suite with the pool on a
// cgroup v2 hierarchy: processes are born in their cgroup (clone3 with
// CLONE_INTO_CGROUP), pause is cgroup.freeze, destroy is cgroup.kill. On a
// hybrid host the unified hierarchy has no controllers, so the limit checks
// skip; on a pure v2 host use the plain suite (TestConformance) instead.
func TestConformanceCgroupV2(t *testing.T) {
	testutil.RequiresRoot(t)
	layout, err := cgpool.Detect()
	if err != nil {
		t.Fatal(err)
	}
	if layout.Version == cgpool.V2 {
		t.Skip("skipping: this host is cgroup v2 only; TestConformance covers it")
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	var v2 *cgpool.Layout
	for _, m := range mounts {
		if m.FSType == "cgroup2" && m.Root == "/" {
			v2 = &cgpool.Layout{Version: cgpool.V2, Unified: m.Point}
		}
	}
	if v2 == nil {
		t.Skip("skipping: no cgroup v2 hierarchy is mounted next to the v1 ones")
	}
	sandboxtest.RunWith(t, func(t *testing.T) sandbox.Backend {
		b, err := lean.New(context.Background(), lean.WithStateDir(testutil.StateDir(t)),
			lean.WithCgroupName("/"+testutil.UniqueName(t)), lean.WithCgroupLayout(v2), lean.WithPoolSize(2))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, sandboxtest.Options{NoLimits: true})
}

// A process that joined the sandbox's cgroup from outside its PID
// namespace (as a zygote's child does) does not die with the sandbox's
// init: Destroy kills it through the cgroup before it returns, whether a
// tree ran or not. (Without parking: the background refill would take the
// cgroup at once and kill the process itself, hiding a Destroy that left
// it.)
func TestDestroyKillsProcessesFromOutside(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	b, err := lean.New(ctx, lean.WithStateDir(testutil.StateDir(t)), lean.WithCgroupName("/"+testutil.UniqueName(t)), lean.WithParked(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	for i, started := range []bool{false, true} {
		sb, err := b.Create(ctx, fmt.Sprintf("outside-%d", i), sandbox.Spec{})
		if err != nil {
			t.Fatal(err)
		}
		if started {
			p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/true"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		sleeper := exec.Command("sleep", "100")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- sleeper.Wait() }()
		procs, err := sb.(*lean.Sandbox).OpenCgroupProcs()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range procs {
			if _, err := f.WriteString(strconv.Itoa(sleeper.Process.Pid)); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		if err := sb.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
		// Killed before Destroy returned: a zombie (or reaped) by now.
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", sleeper.Process.Pid)); err == nil {
			if f := strings.Fields(string(st)); len(f) > 2 && f[2] != "Z" {
				t.Errorf("started=%v: process from outside still %s after Destroy", started, f[2])
			}
		}
		_ = sleeper.Process.Kill()
		<-done
	}
}

// Every live sandbox, parked or not, has a record naming its cgroup on its
// directory beside its root (what a later Cleanup reports), and Destroy
// removes it.
func TestRecords(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	state := testutil.StateDir(t)
	b := newBackend(t, state, "/"+testutil.UniqueName(t))
	time.Sleep(50 * time.Millisecond) // let the parking refill run
	const xattr = "trusted.sockfaas.sandbox"
	read := func(dir string) ([]byte, error) {
		buf := make([]byte, 256)
		n, err := unix.Getxattr(dir, xattr, buf)
		if errors.Is(err, unix.EOPNOTSUPP) { // a tmpfs without xattrs: a file
			return os.ReadFile(filepath.Join(dir, "sandbox.record"))
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		return buf[:n], nil
	}
	for _, spec := range []sandbox.Spec{{}, {Namespaces: sandbox.DefaultNamespaces | sandbox.NSNet}} {
		sb, err := b.Create(ctx, "rec", spec)
		if err != nil {
			t.Fatal(err)
		}
		info := sb.Info()
		dir := filepath.Dir(info.Root)
		data, err := read(dir)
		if err != nil {
			t.Fatalf("namespaces %v: %v", spec.Namespaces, err)
		}
		ns, cgroup, _ := strings.Cut(string(data), " ")
		created, err := strconv.ParseInt(ns, 10, 64)
		if err != nil || time.Since(time.Unix(0, created)) > time.Minute {
			t.Errorf("namespaces %v: record %q: creation time %q", spec.Namespaces, data, ns)
		}
		if cgroup == "" || !strings.HasSuffix(info.Cgroups[0], cgroup) || filepath.Base(dir) != "rec" {
			t.Errorf("namespaces %v: record %s on %s, sandbox in %v", spec.Namespaces, data, dir, info.Cgroups)
		}
		if err := sb.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
		// Its root is a spare now, under another name: only parked
		// sandboxes have records.
		dirs, _ := filepath.Glob(filepath.Join(state, "roots", "*"))
		for _, d := range dirs {
			if _, err := read(d); err == nil && !strings.HasPrefix(filepath.Base(d), "_park-") {
				t.Errorf("namespaces %v: record on %s after Destroy", spec.Namespaces, d)
			}
		}
	}
}

// Signals act as on any process with or without an init: SIGTERM ends a
// program that has no handler for it (as PID 1 the kernel would drop it;
// the backend stands in with SIGKILL and reports SIGTERM), and a handled
// signal reaches the handler.
func TestSignalsWithAndWithoutInit(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	b := newBackend(t, testutil.StateDir(t), "/"+testutil.UniqueName(t))
	for i, init := range []bool{false, true} {
		sb, err := b.Create(ctx, fmt.Sprintf("sig-%d", i), sandbox.Spec{})
		if err != nil {
			t.Fatal(err)
		}
		p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/sleep", "100"}, Init: init})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := p.Wait(wctx)
		cancel()
		if err != nil || st.Signal != syscall.SIGTERM {
			t.Errorf("init=%v: SIGTERM to sleep: %+v %v", init, st, err)
		}
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		p, err = sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/sh", "-c", "trap 'exit 9' USR1; echo ready; while :; do sleep 0.01; done"}, Stdout: w, Init: init})
		w.Close()
		if err != nil {
			t.Fatal(err)
		}
		line := make([]byte, 6)
		if _, err := io.ReadFull(r, line); err != nil {
			t.Fatal(err)
		}
		if err := p.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		st, err = p.Wait(wctx)
		cancel()
		r.Close()
		if err != nil || st.Code != 9 {
			t.Errorf("init=%v: trapped USR1: %+v %v", init, st, err)
		}
		if err := sb.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
