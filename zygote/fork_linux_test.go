package zygote_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
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
	"github.com/sockfaas/sockfaas/zygote"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func functionDir(t testing.TB, name string) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "functions", name))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// functionSandbox makes a sandbox with the function's code at /code and its
// scratch owned by uid.
func functionSandbox(t testing.TB, be *lean.Backend, fn string, uid int) *lean.Sandbox {
	t.Helper()
	sb := newSandbox(t, be, sandbox.Spec{Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: functionDir(t, fn), Dest: "/code"}}}})
	if err := os.Chown(sb.Scratch(), uid, uid); err != nil {
		t.Fatal(err)
	}
	return sb
}

func procStatus(t testing.TB, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// inCgroup checks that pid is in sb's cgroup in every hierarchy.
func inCgroup(t testing.TB, sb *lean.Sandbox, pid int) {
	t.Helper()
	for _, dir := range sb.Info().Cgroups {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(strings.Fields(string(data)), strconv.Itoa(pid)) {
			t.Errorf("pid %d is not in %s", pid, dir)
		}
	}
}

// TestServeFromNumpyZygote forks Lambda-style handlers from a numpy zygote
// and invokes them.
func TestServeFromNumpyZygote(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := ctxT(t)
	be := newLean(t)
	z := startZygote(t, be, "numpy")
	for i, c := range []struct{ fn, event, want string }{
		{"hello", `{"name":"zygote"}`, `{"hello": "zygote"}`},
		{"numpy", `{"values":[1,2,39]}`, `{"sum": 42}`},
	} {
		t.Run(c.fn, func(t *testing.T) {
			uid := 200010 + i
			sb := functionSandbox(t, be, c.fn, uid)
			inst, err := z.Fork(ctx, sb, zygote.ForkRequest{
				Kind:     zygote.KindServe,
				Function: &zygote.Function{Socket: "/scratch/fn.sock", Dir: "/code", Name: c.fn, MemoryMB: 128},
				UID:      uint32(uid), GID: uint32(uid), Hostname: "fn-" + c.fn,
				Env: []string{"PATH=/usr/bin:/bin", "HOME=/tmp"},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close()
			cl, err := zygote.Dial(ctx, filepath.Join(sb.Scratch(), "fn.sock"))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			res, err := cl.Invoke(ctx, zygote.InvokeRequest{Payload: []byte(c.event)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != 200 || res.FunctionError || string(res.Payload) != c.want {
				t.Errorf("invoke: status %d, function error %v, payload %s; want %s", res.Status, res.FunctionError, res.Payload, c.want)
			}
			pid := inst.Pid()
			inCgroup(t, sb, pid)
			st := procStatus(t, pid)
			if !strings.HasPrefix(st["Uid"], strconv.Itoa(uid)+"\t") || st["CapEff"] != "0000000000000000" ||
				st["CapBnd"] != "0000000000000000" || st["NoNewPrivs"] != "1" {
				t.Errorf("instance credentials: Uid %q CapEff %q CapBnd %q NoNewPrivs %q", st["Uid"], st["CapEff"], st["CapBnd"], st["NoNewPrivs"])
			}
			// Its root is the sandbox's: the code is there, the zygote's
			// runtime and the host's /work are not.
			proot := fmt.Sprintf("/proc/%d/root", pid)
			if _, err := os.Stat(proot + "/code/lambda_function.py"); err != nil {
				t.Errorf("code not in the instance's root: %v", err)
			}
			for _, p := range []string{"/work", "/sockfaas", "/root"} {
				if _, err := os.Lstat(proot + p); err == nil {
					t.Errorf("%s visible in the instance's root", p)
				}
			}
			if err := inst.Close(); err != nil {
				t.Fatal(err)
			}
			if st, err := inst.Wait(ctx); err != nil || st.Signal != syscall.SIGKILL {
				t.Errorf("after Close: %+v %v, want killed", st, err)
			}
		})
	}
	// A handler that cannot load is a ForkError naming the step.
	sb := functionSandbox(t, be, "bad-syntax", 200019)
	_, err := z.Fork(ctx, sb, zygote.ForkRequest{Kind: zygote.KindServe, UID: 200019, GID: 200019,
		Function: &zygote.Function{Socket: "/scratch/fn.sock", Dir: "/code"}})
	var fe *zygote.ForkError
	if !errors.As(err, &fe) || fe.Step != "load" {
		t.Errorf("bad syntax: got %v, want a ForkError at step load", err)
	}
	if !z.Alive() {
		t.Errorf("zygote died")
	}
}

// exec runs argv in sb as uid and returns stdout.
func execIn(t testing.TB, z *zygote.Zygote, sb *lean.Sandbox, uid int, hostname string, argv ...string) (*zygote.Instance, *bufio.Reader) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	inst, err := z.Fork(ctxT(t), sb, zygote.ForkRequest{Kind: zygote.KindExec, Argv: argv, UID: uint32(uid), GID: uint32(uid),
		Hostname: hostname, Env: []string{"PATH=/usr/bin:/bin"}, Stdout: w})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Close() })
	return inst, bufio.NewReader(r)
}

// TestInstancesAreApart: without PID namespaces, instances with their own
// uids cannot see or signal each other, the zygote or the host.
func TestInstancesAreApart(t *testing.T) {
	testutil.RequiresRoot(t)
	be := newLean(t)
	z := startZygote(t, be)
	sbA, sbB := newSandbox(t, be, sandbox.Spec{}), newSandbox(t, be, sandbox.Spec{})
	a, _ := execIn(t, z, sbA, 200101, "a", "/bin/sleep", "30")
	_, out := execIn(t, z, sbB, 200102, "b-host", "/bin/sh", "-c", `
id -u; hostname
ls /proc > /tmp/procs; echo procs $(grep -c '^[0-9]' /tmp/procs)
for p in "$@"; do
	kill -0 "$p" 2>/dev/null && echo "signallable $p"
	[ -e "/proc/$p" ] && echo "listed $p"
done
for p in /work /sockfaas /root /etc/shadow; do [ -e "$p" ] && echo "visible $p"; done
echo end`, "sh", strconv.Itoa(a.Pid()), strconv.Itoa(z.Pid()), "1", strconv.Itoa(os.Getpid()))
	var lines []string
	for {
		line, err := out.ReadString('\n')
		if err != nil {
			break
		}
		lines = append(lines, strings.TrimSpace(line))
	}
	t.Logf("instance b: %q", lines)
	if len(lines) < 4 || lines[0] != "200102" || lines[1] != "b-host" || lines[len(lines)-1] != "end" {
		t.Fatalf("probe output %q", lines)
	}
	if n, _ := strconv.Atoi(strings.TrimPrefix(lines[2], "procs ")); n < 1 || n > 3 {
		t.Errorf("instance sees %s processes, want only its own (1-3)", lines[2])
	}
	for _, l := range lines[3 : len(lines)-1] {
		t.Errorf("isolation leak: %s", l)
	}
	inCgroup(t, sbA, a.Pid())
}

// TestMemoryChargedToOwnCgroup: a child's pages are charged to its sandbox,
// not to the zygote.
func TestMemoryChargedToOwnCgroup(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := ctxT(t)
	be := newLean(t)
	z := startZygote(t, be)
	zBefore, err := z.MemoryBytes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sb := newSandbox(t, be, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 256 << 20}})
	_, out := execIn(t, z, sb, 200201, "mem", "/usr/bin/python3", "-c",
		"import time; b = bytearray(96 << 20); print('ok', flush=True); time.sleep(30)")
	if line, err := out.ReadString('\n'); err != nil || line != "ok\n" {
		t.Fatalf("allocator: %q %v", line, err)
	}
	st, err := sb.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	zAfter, _ := z.MemoryBytes(ctx)
	t.Logf("sandbox charge %d MiB; zygote %d -> %d MiB", st.MemoryBytes>>20, zBefore>>20, zAfter>>20)
	if st.MemoryBytes < 96<<20 {
		t.Errorf("sandbox charged %d bytes for a 96 MiB allocation", st.MemoryBytes)
	}
	if zAfter > zBefore+16<<20 {
		t.Errorf("zygote's charge grew from %d to %d", zBefore, zAfter)
	}
}

// TestTreeRestartsKilledZygote: a fork on a killed zygote is retried on a
// fresh one.
func TestTreeRestartsKilledZygote(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := ctxT(t)
	be := newLean(t)
	tree, err := zygote.NewTree(ctx, be, zygote.TreeConfig{Root: zygote.Config{ID: "zt", RuntimeDir: runtimeDir(t)}})
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close(context.Background())
	run := func() {
		t.Helper()
		sb := newSandbox(t, be, sandbox.Spec{})
		inst, err := tree.Fork(ctx, sb, nil, zygote.ForkRequest{Kind: zygote.KindExec, Argv: []string{"/bin/true"}, UID: 200301, GID: 200301})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := inst.Wait(ctx); err != nil || !st.Success() {
			t.Fatalf("/bin/true: %+v %v", st, err)
		}
	}
	run()
	z := tree.Nodes()[0].Zygote
	old := z.Pid()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	run() // whether or not the death was noticed yet
	if now := z.Pid(); now == old || now == 0 || !z.Alive() {
		t.Errorf("zygote pid %d -> %d, alive %v", old, now, z.Alive())
	}
}

// TestTreeGrowsAndPrunes: repeated requests for numpy grow a numpy child
// zygote under the root, which serves later forks, and idles out.
func TestTreeGrowsAndPrunes(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := ctxT(t)
	be := newLean(t)
	tree, err := zygote.NewTree(ctx, be, zygote.TreeConfig{
		Root:      zygote.Config{ID: "zg", RuntimeDir: runtimeDir(t)},
		GrowAfter: 2, IdleTimeout: 500 * time.Millisecond, CheckInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tree.Close(context.Background())
	reqs := []string{"numpy"}
	fork := func() {
		t.Helper()
		sb := newSandbox(t, be, sandbox.Spec{})
		inst, err := tree.Fork(ctx, sb, reqs, zygote.ForkRequest{Kind: zygote.KindExec, Argv: []string{"/bin/true"}, UID: 200401, GID: 200401})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := inst.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fork()
	fork()
	var child zygote.Node
	if !eventually(30*time.Second, func() bool {
		ns := tree.Nodes()
		if len(ns) == 2 && ns[1].Ready {
			child = ns[1]
			return true
		}
		return false
	}) {
		t.Fatalf("no numpy zygote grown: %+v", tree.Nodes())
	}
	if child.Parent != "zg" || !slices.Equal(child.Packages, reqs) {
		t.Errorf("grown node %+v", child)
	}
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", child.Zygote.Pid()))
	if !strings.Contains(string(maps), "numpy") {
		t.Errorf("grown zygote has not loaded numpy")
	}
	inCgroup(t, child.Zygote.Sandbox(), child.Zygote.Pid())
	fork()
	if ns := tree.Nodes(); ns[1].Forks != 1 {
		t.Errorf("grown node served %d forks, want 1", ns[1].Forks)
	}
	// A serve instance from the grown node runs the numpy handler.
	sb := functionSandbox(t, be, "numpy", 200402)
	inst, err := tree.Fork(ctx, sb, reqs, zygote.ForkRequest{Kind: zygote.KindServe, UID: 200402, GID: 200402,
		Function: &zygote.Function{Socket: "/scratch/fn.sock", Dir: "/code"}})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := zygote.Dial(ctx, filepath.Join(sb.Scratch(), "fn.sock"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := cl.Invoke(ctx, zygote.InvokeRequest{Payload: []byte(`{"values":[2,3]}`)})
	cl.Close()
	inst.Close()
	if err != nil || string(res.Payload) != `{"sum": 5}` {
		t.Fatalf("numpy handler from the grown zygote: %v %+v", err, res)
	}
	time.Sleep(600 * time.Millisecond)
	pid := child.Zygote.Pid()
	if err := tree.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if ns := tree.Nodes(); len(ns) != 1 {
		t.Fatalf("idle node not pruned: %+v", ns)
	}
	if child.Zygote.Alive() || eventually(time.Second, func() bool { _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); return err != nil }) == false {
		t.Errorf("pruned zygote %d still running", pid)
	}
}

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
