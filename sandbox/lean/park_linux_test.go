package lean_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
)

// cgroupPids lists the processes in the sandbox's cgroups.
func cgroupPids(t *testing.T, sb sandbox.Sandbox) []int {
	t.Helper()
	var pids []int
	for _, dir := range sb.Info().Cgroups {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// createParked creates default sandboxes until one comes with a parked
// helper (the backend parks in the background), and returns it with the
// helper's pid.
func createParked(t *testing.T, b *lean.Backend) (sandbox.Sandbox, int) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		sb, err := b.Create(ctx, "p"+strconv.Itoa(i)+testutil.UniqueName(t)[len("sockfaas-test-"):], sandbox.Spec{})
		if err != nil {
			t.Fatal(err)
		}
		// A parked helper: PID 1 of its namespace, which becomes the
		// program (ProcessSpec.Init is false by default).
		if pids := cgroupPids(t, sb); len(pids) == 1 {
			return sb, pids[0]
		}
		if err := sb.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no sandbox came with a parked helper")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestParked: a default sandbox comes with an init helper already in its
// cgroup and namespaces; the first Start uses it, a second tree gets a
// fresh helper, and the sandbox behaves as any other.
func TestParked(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	b := newBackend(t, testutil.StateDir(t), "/"+testutil.UniqueName(t))
	sb, helper := createParked(t, b)
	defer sb.Destroy(ctx)

	var out strings.Builder
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := sb.Start(ctx, sandbox.ProcessSpec{
		Args:   []string{"/bin/sh", "-c", `echo "$$ $(hostname) $(id -u) $1"; ls /proc | grep -c '^[0-9]'`, "sh", "an arg"},
		Env:    []string{"PATH=/usr/bin:/bin"},
		Stdout: w,
	})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if p.Pid() != helper {
		t.Errorf("started pid %d, want the parked helper %d", p.Pid(), helper)
	}
	data, _ := io.ReadAll(r)
	out.Write(data)
	r.Close()
	st, err := p.Wait(ctx)
	if err != nil || !st.Success() {
		t.Fatalf("wait: %+v %v", st, err)
	}
	// PID 1, the parked helper itself; its hostname is set at Start;
	// nobody; the sandbox's /proc lists sh, ls and grep.
	if want := "1 " + sb.ID() + " 65534 an arg\n3\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	// A second tree needs a new helper: the parked one was used up.
	p, err = sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/true"}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Pid() == helper {
		t.Errorf("second start reused the used-up helper %d", helper)
	}
	if st, err := p.Wait(ctx); err != nil || !st.Success() {
		t.Fatalf("second wait: %+v %v", st, err)
	}
}

// TestParkedInit: a program that wants an init does not fit a parked
// helper, which would exec it as PID 1: it gets a fresh one, whose init
// runs it as PID 2, and the parked helper is dropped.
func TestParkedInit(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	b := newBackend(t, testutil.StateDir(t), "/"+testutil.UniqueName(t))
	sb, helper := createParked(t, b)
	defer sb.Destroy(ctx)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/sh", "-c", "echo $$"}, Stdout: w, Init: true})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	r.Close()
	if p.Pid() == helper || string(out) != "2\n" {
		t.Errorf("with Init: pid %d (parked %d), pid inside %q; want a new helper and 2", p.Pid(), helper, out)
	}
	if st, err := p.Wait(ctx); err != nil || !st.Success() {
		t.Fatalf("wait: %+v %v", st, err)
	}
	waitGone(t, helper)
}

// TestParkedDiscarded: a parked helper the sandbox cannot use (a
// privileged start, a copy of its root for a zygote) or never uses
// (Destroy) is killed, and the sandbox goes on without it.
func TestParkedDiscarded(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	b := newBackend(t, testutil.StateDir(t), "/"+testutil.UniqueName(t))

	sb, helper := createParked(t, b)
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	waitGone(t, helper)

	sb, helper = createParked(t, b)
	f, err := sb.(*lean.Sandbox).CloneRoot()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	waitGone(t, helper)
	if pids := cgroupPids(t, sb); len(pids) != 0 {
		t.Errorf("cgroup holds %v after the parked helper was dropped", pids)
	}
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}

	sb, helper = createParked(t, b)
	p, err := sb.(*lean.Sandbox).StartPrivileged(ctx, sandbox.ProcessSpec{Args: []string{"/bin/sh", "-c", "test $(id -u) = 0"}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Pid() == helper {
		t.Errorf("a privileged start used the parked helper, which dropped its bounding set")
	}
	if st, err := p.Wait(ctx); err != nil || !st.Success() {
		t.Fatalf("privileged: %+v %v", st, err)
	}
	waitGone(t, helper)
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}

	// A helper killed while parked: Start falls back to a new one.
	sb, helper = createParked(t, b)
	if err := syscall.Kill(helper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, helper)
	p, err = sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/true"}})
	if err != nil {
		t.Fatalf("start after the parked helper died: %v", err)
	}
	if st, err := p.Wait(ctx); err != nil || !st.Success() {
		t.Fatalf("after the parked helper died: %+v %v", st, err)
	}
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestNotParked: without parking, and for sandboxes that are not of the
// default root and namespaces, nothing waits in a new sandbox's cgroup.
func TestNotParked(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	b, err := lean.New(ctx, lean.WithStateDir(testutil.StateDir(t)), lean.WithCgroupName("/"+testutil.UniqueName(t)), lean.WithParked(0))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	time.Sleep(50 * time.Millisecond)
	sb, err := b.Create(ctx, "plain", sandbox.Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if pids := cgroupPids(t, sb); len(pids) != 0 {
		t.Errorf("WithParked(0): cgroup holds %v", pids)
	}

	parking := newBackend(t, testutil.StateDir(t), "/"+testutil.UniqueName(t))
	time.Sleep(50 * time.Millisecond)
	for name, spec := range map[string]sandbox.Spec{
		"netns":       {Namespaces: sandbox.DefaultNamespaces | sandbox.NSNet},
		"no-ipc":      {Namespaces: sandbox.NSMount | sandbox.NSPID | sandbox.NSUTS},
		"mountpoints": {Root: fsbindSpecWithMountPoint()},
	} {
		sb, err := parking.Create(ctx, name, spec)
		if err != nil {
			t.Fatal(err)
		}
		if pids := cgroupPids(t, sb); len(pids) != 0 {
			t.Errorf("%s: cgroup holds %v", name, pids)
		}
		p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/true"}})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st, err := p.Wait(ctx); err != nil || !st.Success() {
			t.Errorf("%s: %+v %v", name, st, err)
		}
		if err := sb.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func fsbindSpecWithMountPoint() fsbind.Spec { return fsbind.Spec{MountPoints: []string{"/code"}} }
