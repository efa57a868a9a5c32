//go:build linux

package peers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/internal/testutil"
)

var runtimeNames = []string{"crun", "runc"}

func TestFindMissing(t *testing.T) {
	_, err := Find("sockfaas-no-such-runtime")
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("Find: got %v, want ErrNotInstalled", err)
	}
	if !strings.Contains(err.Error(), "apt-get install sockfaas-no-such-runtime") {
		t.Errorf("error does not say how to install: %v", err)
	}
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"a", "b0", "x_y-z.1"} {
		if err := validID(id); err != nil {
			t.Errorf("validID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", ".a", "a/b", "a b", strings.Repeat("a", 129)} {
		if err := validID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("validID(%q) = %v, want ErrInvalid", id, err)
		}
	}
}

func TestNewBundleRejectsCgroupParent(t *testing.T) {
	for _, p := range []string{"", "/", "rel/x", "/a/../b", "/a/"} {
		_, err := NewBundle(filepath.Join(t.TempDir(), "b"), BundleOptions{CgroupParent: p})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("cgroup parent %q: got %v, want ErrInvalid", p, err)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	var tb tailBuffer
	fmt.Fprint(&tb, strings.Repeat("x", tailMax))
	fmt.Fprint(&tb, "end")
	if len(tb.b) != tailMax || !strings.HasSuffix(string(tb.b), "xend") {
		t.Errorf("tail keeps %d bytes ending %q", len(tb.b), tb.b[len(tb.b)-4:])
	}
	fmt.Fprint(&tb, strings.Repeat("y", 3*tailMax)+"last")
	if len(tb.b) != tailMax || !strings.HasSuffix(string(tb.b), "ylast") {
		t.Errorf("tail after a long write keeps %d bytes ending %q", len(tb.b), tb.b[len(tb.b)-5:])
	}
}

// env is one runtime with one bundle, torn down and checked for debris
// when the test ends.
type env struct {
	rt     *Runtime
	b      *Bundle
	base   string
	parent string
}

func newEnv(tb testing.TB, name string) *env {
	tb.Helper()
	testutil.RequiresRoot(tb)
	rt, err := Find(name)
	if err != nil {
		tb.Skipf("skipping %s: %v", name, err)
	}
	e := &env{rt: rt, base: testutil.StateDir(tb), parent: "/" + testutil.UniqueName(tb)}
	e.b, err = NewBundle(filepath.Join(e.base, "b"), BundleOptions{CgroupParent: e.parent})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("%s: bundle %s, cgroup parent %s", name, e.b.Dir, e.parent)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if ids, err := rt.List(ctx, e.b); err != nil || len(ids) > 0 {
			tb.Errorf("%s list before cleanup: %v %v", name, ids, err)
		}
		if err := Cleanup(ctx, e.b, rt); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		_ = rt.Close()
		e.checkNoDebris(tb)
	})
	return e
}

// checkNoDebris: no state, no cgroup directory, no mount left behind.
func (e *env) checkNoDebris(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(e.b.Dir); !errors.Is(err, os.ErrNotExist) {
		tb.Errorf("bundle dir %s still there (%v)", e.b.Dir, err)
	}
	if left := cgroupDirs(tb, e.parent); len(left) > 0 {
		tb.Errorf("cgroups left: %v", left)
	}
	if left := testutil.MountsUnder(e.base); len(left) > 0 {
		tb.Errorf("mounts left: %v", left)
	}
}

// cgroupDirs lists parent and what is below it in every cgroup hierarchy.
func cgroupDirs(tb testing.TB, parent string) []string {
	tb.Helper()
	mps, err := cgroupMountpoints()
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, mp := range mps {
		_ = filepath.WalkDir(filepath.Join(mp, parent), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

func (e *env) run(tb testing.TB, id string, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	err := e.rt.Run(ctx, e.b, id, args, &out, &errOut)
	if errOut.Len() > 0 {
		tb.Logf("%s stderr: %s", id, errOut.String())
	}
	return out.String(), err
}

func TestRun(t *testing.T) {
	for _, name := range runtimeNames {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, name)
			if name == "crun" && e.rt.HybridWorkaround() != cgroupLayoutHybrid() {
				t.Errorf("HybridWorkaround() = %v on a layout where hybrid = %v", e.rt.HybridWorkaround(), cgroupLayoutHybrid())
			}
			t.Logf("%s at %s, hybrid workaround: %v", e.rt.Name, e.rt.Path, e.rt.HybridWorkaround())

			t.Run("echo", func(t *testing.T) {
				out, err := e.run(t, "echo", "/bin/echo", "hi")
				if err != nil || out != "hi\n" {
					t.Fatalf("got %q, %v; want \"hi\\n\"", out, err)
				}
			})

			t.Run("isolation", func(t *testing.T) { testIsolation(t, e) })

			t.Run("python", func(t *testing.T) {
				if _, err := os.Stat("/usr/bin/python3"); err != nil {
					t.Skip("skipping: no /usr/bin/python3 on the host (apt-get install python3)")
				}
				out, err := e.run(t, "py", "/usr/bin/python3", "-c", "import json, sys; print(sys.version_info[0])")
				if err != nil || out != "3\n" {
					t.Fatalf("got %q, %v; want \"3\\n\"", out, err)
				}
			})

			t.Run("numpy", func(t *testing.T) {
				if exec.Command("/usr/bin/python3", "-c", "import numpy").Run() != nil {
					t.Skip("skipping: numpy is not importable on the host (apt-get install python3-numpy)")
				}
				want, err := exec.Command("/usr/bin/python3", "-c", "import numpy; print(numpy.__version__)").Output()
				if err != nil {
					t.Fatal(err)
				}
				out, err := e.run(t, "np", "/usr/bin/python3", "-c", "import numpy; print(numpy.__version__)")
				if err != nil || out != string(want) {
					t.Fatalf("got %q, %v; want %q", out, err, want)
				}
			})

			t.Run("exit-code", func(t *testing.T) {
				_, err := e.run(t, "exit3", "/bin/sh", "-c", "exit 3")
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 3 {
					t.Fatalf("got %v, want an *exec.ExitError with code 3", err)
				}
			})

			t.Run("no-such-command", func(t *testing.T) {
				_, err := e.run(t, "nocmd", "/nonexistent")
				if err == nil || !strings.Contains(err.Error(), "stderr:") {
					t.Fatalf("got %v, want an error carrying the runtime's stderr", err)
				}
				t.Logf("error reads: %v", err)
			})

			t.Run("invalid", func(t *testing.T) {
				if _, err := e.run(t, "a/b", "/bin/true"); !errors.Is(err, ErrInvalid) {
					t.Errorf("bad id: got %v, want ErrInvalid", err)
				}
				if _, err := e.run(t, "noargs"); !errors.Is(err, ErrInvalid) {
					t.Errorf("no args: got %v, want ErrInvalid", err)
				}
			})

			t.Run("cancel", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				defer cancel()
				start := time.Now()
				err := e.rt.Run(ctx, e.b, "sleeper", []string{"/bin/sleep", "60"}, nil, nil)
				if err == nil {
					t.Fatal("a cancelled run returned no error")
				}
				if d := time.Since(start); d > 15*time.Second {
					t.Errorf("cancelled run took %v", d)
				}
				if ids, err := e.rt.List(context.Background(), e.b); err != nil || len(ids) > 0 {
					t.Errorf("after a cancelled run: list = %v, %v; want empty", ids, err)
				}
			})

			t.Run("concurrent", func(t *testing.T) {
				var wg sync.WaitGroup
				for i := range 4 {
					wg.Go(func() {
						id := fmt.Sprintf("c%d", i)
						out, err := e.run(t, id, "/bin/echo", id)
						if err != nil || out != id+"\n" {
							t.Errorf("%s: got %q, %v", id, out, err)
						}
					})
				}
				wg.Wait()
			})

			if e.rt.HybridWorkaround() && !cgroupLayoutHybrid() {
				t.Error("the workaround's unmount of the cgroup2 reached the host")
			}
			// Every run removed its container and its cgroups; only the
			// parent directories remain until Cleanup.
			if ids, err := e.rt.List(context.Background(), e.b); err != nil || len(ids) > 0 {
				t.Errorf("after the runs: list = %v, %v; want empty", ids, err)
			}
			for _, d := range cgroupDirs(t, e.parent) {
				if filepath.Base(d) != filepath.Base(e.parent) {
					t.Errorf("container cgroup left after its run: %s", d)
				}
			}
			// Slots are reused: the concurrent runs needed at most 4.
			if entries, _ := os.ReadDir(filepath.Join(e.b.Dir, "run")); len(entries) > 4 {
				t.Errorf("%d run slots for at most 4 concurrent runs", len(entries))
			}
		})
	}
}

// testIsolation checks what the bundle promises: nobody, no capabilities,
// no_new_privs, the cgroup under the parent, loopback only, a read-only root
// with a writable /tmp, its own hostname.
func testIsolation(t *testing.T, e *env) {
	script := `grep -E '^(Uid|Gid|CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status
echo ---; cat /proc/self/cgroup
echo ---; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '
echo ---; touch /x 2>/dev/null && echo root-writable; touch /tmp/x && echo tmp-writable
echo ---; cat /proc/sys/kernel/hostname`
	out, err := e.run(t, "iso", "/bin/sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(out, "---\n")
	if len(parts) != 5 {
		t.Fatalf("unexpected output:\n%s", out)
	}
	status := strings.Join(strings.Fields(parts[0]), " ")
	for _, want := range []string{
		"Uid: 65534 65534 65534 65534", "Gid: 65534 65534 65534 65534",
		"CapPrm: 0000000000000000", "CapEff: 0000000000000000", "CapBnd: 0000000000000000",
		"NoNewPrivs: 1",
	} {
		if !strings.Contains(status, want) {
			t.Errorf("status lacks %q:\n%s", want, parts[0])
		}
	}
	// Without a cgroup namespace /proc/self/cgroup shows host paths; the v1
	// hierarchies that matter for accounting must show parent/iso.
	for _, ctrl := range []string{"memory", "pids", "cpu"} {
		found := false
		for _, line := range strings.Split(parts[1], "\n") {
			f := strings.SplitN(line, ":", 3)
			if len(f) == 3 && slices.Contains(strings.Split(f[1], ","), ctrl) {
				found = true
				if f[2] != e.parent+"/iso" {
					t.Errorf("%s cgroup %q, want %q", ctrl, f[2], e.parent+"/iso")
				}
			}
		}
		if !found && cgroupLayoutHybrid() {
			t.Errorf("no %s line in /proc/self/cgroup:\n%s", ctrl, parts[1])
		}
	}
	if got := strings.TrimSpace(parts[2]); got != "lo" {
		t.Errorf("network interfaces %q, want only lo", got)
	}
	if got := strings.TrimSpace(parts[3]); got != "tmp-writable" {
		t.Errorf("writability %q, want only /tmp writable", got)
	}
	if got := strings.TrimSpace(parts[4]); got != "sockfaas-peer" {
		t.Errorf("hostname %q", got)
	}
}

// TestCleanupKillsLeftovers leaves a container running and checks that
// Cleanup kills and deletes it and removes its cgroups.
func TestCleanupKillsLeftovers(t *testing.T) {
	for _, name := range runtimeNames {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, name)
			done := make(chan error, 1)
			go func() {
				done <- e.rt.Run(context.Background(), e.b, "leftover", []string{"/bin/sleep", "60"}, nil, nil)
			}()
			deadline := time.Now().Add(20 * time.Second)
			for {
				ids, _ := e.rt.List(context.Background(), e.b)
				if len(ids) == 1 && len(cgroupDirs(t, e.parent)) > 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("container never showed up (list %v)", ids)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := Cleanup(context.Background(), e.b, e.rt); err != nil {
				t.Errorf("cleanup: %v", err)
			}
			select {
			case err := <-done:
				if err == nil {
					t.Error("the killed container's run returned no error")
				}
			case <-time.After(20 * time.Second):
				t.Fatal("run still blocked after cleanup")
			}
			e.checkNoDebris(t)
		})
	}
}

func BenchmarkRun(b *testing.B) {
	for _, name := range runtimeNames {
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, name)
			ctx := context.Background()
			// Warm up: page cache, and the workaround's thread when used.
			if err := e.rt.Run(ctx, e.b, "warm", []string{"/bin/true"}, nil, nil); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if err := e.rt.Run(ctx, e.b, fmt.Sprintf("b%d", i), []string{"/bin/true"}, nil, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
		})
	}
}

// BenchmarkHybridWorkaround prices the ways of starting a process without
// the cgroup2 mount, each starting /bin/true and waiting for it:
//
//	exec              plain fork+exec, the baseline
//	view              from cgroupV1View (what Run uses for crun on hybrid)
//	unshare-m         `unshare -m /bin/true`: the namespace alone, per run
//	unshare-sh-umount `unshare -m --propagation private sh -c 'umount … && exec /bin/true'`
//	view-setup        creating and closing a cgroupV1View (once per Runtime)
func BenchmarkHybridWorkaround(b *testing.B) {
	testutil.RequiresRoot(b)
	if !cgroupLayoutHybrid() {
		b.Skip("skipping: the cgroup layout is not hybrid here")
	}
	run := func(b *testing.B, start func(*exec.Cmd) error, argv ...string) {
		for b.Loop() {
			cmd := exec.Command(argv[0], argv[1:]...)
			if err := start(cmd); err != nil {
				b.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	}
	direct := func(cmd *exec.Cmd) error { return cmd.Start() }
	b.Run("exec", func(b *testing.B) { run(b, direct, "/bin/true") })
	b.Run("view", func(b *testing.B) {
		v, err := newCgroupV1View()
		if err != nil {
			b.Fatal(err)
		}
		defer v.close()
		run(b, v.start, "/bin/true")
	})
	b.Run("unshare-m", func(b *testing.B) { run(b, direct, "unshare", "-m", "/bin/true") })
	b.Run("unshare-sh-umount", func(b *testing.B) {
		run(b, direct, "unshare", "-m", "--propagation", "private", "sh", "-c", "umount "+cgroupUnified+" && exec /bin/true")
	})
	b.Run("view-setup", func(b *testing.B) {
		for b.Loop() {
			v, err := newCgroupV1View()
			if err != nil {
				b.Fatal(err)
			}
			v.close()
		}
	})
}

// BenchmarkRunConfig prices the harness's own share of a Run, which
// BenchmarkRun includes: writing the run's config.json into a slot.
func BenchmarkRunConfig(b *testing.B) {
	bundle, err := NewBundle(filepath.Join(b.TempDir(), "b"), BundleOptions{CgroupParent: "/unused"})
	if err != nil {
		b.Fatal(err)
	}
	args := []string{"/bin/true"}
	for i := 0; b.Loop(); i++ {
		dir, err := bundle.prepareRun(fmt.Sprintf("b%d", i), args)
		if err != nil {
			b.Fatal(err)
		}
		bundle.finishRun(dir, true)
	}
}
