package zygote_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/zygote"
)

func forkServe(ctx context.Context, z *zygote.Zygote, sb *lean.Sandbox, uid int, env ...string) (*zygote.Instance, error) {
	return z.Fork(ctx, sb, zygote.ForkRequest{
		Kind:     zygote.KindServe,
		Function: &zygote.Function{Socket: "/scratch/fn.sock", Dir: "/code", Name: "f"},
		UID:      uint32(uid), GID: uint32(uid), Env: env, Timeout: 20 * time.Second,
	})
}

func invokeJSON(t *testing.T, ctx context.Context, sb *lean.Sandbox) map[string]any {
	t.Helper()
	cl, err := zygote.Dial(ctx, filepath.Join(sb.Scratch(), "fn.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	res, err := cl.Invoke(ctx, zygote.InvokeRequest{Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(res.Payload, &m); err != nil {
		t.Fatalf("payload %s: %v", res.Payload, err)
	}
	return m
}

// TestHostileReportsOnReadyPipe: a handler whose module writes to the
// zygote's ready pipe (a forged pid, garbage, a flood) fails its own fork
// and nothing else: the zygote survives, no foreign pid is adopted or
// signalled, and the next fork works.
func TestHostileReportsOnReadyPipe(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := ctxT(t)
	be := newLean(t)
	z := startZygote(t, be)
	victim := exec.Command("sleep", "300")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	defer victim.Process.Kill()
	victimDone := make(chan error, 1)
	go func() { victimDone <- victim.Wait() }()

	for i, mode := range []string{"forge", "garbage", "flood"} {
		uid := 200600 + i
		sb := functionSandbox(t, be, "hostile", uid)
		inst, err := forkServe(ctx, z, sb, uid, "MODE="+mode, "VICTIM="+strconv.Itoa(victim.Process.Pid))
		if err == nil {
			if inst.Pid() == victim.Process.Pid {
				t.Errorf("%s: the zygote reported the victim's pid", mode)
			}
			_ = inst.Signal(syscall.SIGKILL)
			inst.Close()
			t.Errorf("%s: fork succeeded, want a protocol error", mode)
		} else {
			var fe *zygote.ForkError
			if !errors.As(err, &fe) || fe.Step != "protocol" {
				t.Errorf("%s: got %v, want a ForkError at step protocol", mode, err)
			}
		}
		for _, p := range sb.Info().Pids {
			if p == victim.Process.Pid {
				t.Errorf("%s: victim adopted into the sandbox", mode)
			}
		}
		if !z.Alive() {
			t.Fatalf("%s: the zygote died", mode)
		}
	}
	select {
	case err := <-victimDone:
		t.Fatalf("the victim died: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	// The zygote still serves.
	sb := functionSandbox(t, be, "hello", 200610)
	inst, err := forkServe(ctx, z, sb, 200610)
	if err != nil {
		t.Fatal(err)
	}
	inst.Close()
}

// TestSecretsNotInherited: the environment of one function (its secrets)
// reaches neither the zygote's memory nor that of an instance forked later
// for another function.
func TestSecretsNotInherited(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := ctxT(t)
	be := newLean(t)
	for _, spare := range []string{"1", "0"} {
		t.Run("spare="+spare, func(t *testing.T) {
			z, err := zygote.Start(ctx, be, zygote.Config{ID: "zyg-secret-" + spare, RuntimeDir: runtimeDir(t),
				Env: []string{"SOCKFAAS_ZYGOTE_SPARE=" + spare}})
			if err != nil {
				t.Fatal(err)
			}
			defer z.Close(context.Background())
			secret := "zyg0te-secret-" + strings.Repeat("Q", 8)
			sbA := functionSandbox(t, be, "hello", 200620)
			a, err := forkServe(ctx, z, sbA, 200620, "API_KEY="+secret, "PAD="+strings.Repeat("p", 4000))
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			// A few more forks, so that a spare forked after A's request
			// would carry whatever the zygote kept of it.
			for i := 0; i < 2; i++ {
				sb := functionSandbox(t, be, "hello", 200621+i)
				inst, err := forkServe(ctx, z, sb, 200621+i)
				if err != nil {
					t.Fatal(err)
				}
				inst.Close()
			}
			sbB := functionSandbox(t, be, "hostile", 200625)
			b, err := forkServe(ctx, z, sbB, 200625)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if r := invokeJSON(t, ctx, sbB); r["secret_hits"] != float64(0) {
				t.Errorf("another function's secret is in the instance's memory: %v", r)
			}
			if n := memoryHits(t, z.Pid(), []byte(secret)); n != 0 {
				t.Errorf("the secret is in the zygote's memory %d times", n)
			}
		})
	}
}

// memoryHits counts needle in the readable memory of pid.
func memoryHits(t *testing.T, pid int, needle []byte) int {
	t.Helper()
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	re := regexp.MustCompile(regexp.QuoteMeta(string(needle)))
	hits := 0
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[1][0] != 'r' {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		l, err1 := strconv.ParseUint(lo, 16, 64)
		h, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || h-l > 1<<30 {
			continue
		}
		buf := make([]byte, h-l)
		n, _ := mem.ReadAt(buf, int64(l))
		hits += len(re.FindAllIndex(buf[:n], -1))
		_ = bytes.MinRead
	}
	return hits
}

// TestZygoteDiesDuringFork: a zygote that dies while its child loads the
// handler leaves nothing in the target sandbox, and a retry into the same
// sandbox works.
func TestZygoteDiesDuringFork(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := ctxT(t)
	be := newLean(t)
	z := startZygote(t, be)
	uid := 200630
	sb := functionSandbox(t, be, "hostile", uid)
	errc := make(chan error, 1)
	go func() {
		inst, err := forkServe(ctx, z, sb, uid, "MODE=hang")
		if inst != nil {
			inst.Close()
		}
		errc <- err
	}()
	if !eventually(20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(sb.Scratch(), "loading"))
		return err == nil
	}) {
		t.Fatal("the child never started loading")
	}
	if err := syscall.Kill(z.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, zygote.ErrZygote) {
		t.Fatalf("fork: got %v, want ErrZygote", err)
	}
	procs := filepath.Join(sb.Info().Cgroups[0], "cgroup.procs")
	if !eventually(5*time.Second, func() bool {
		b, err := os.ReadFile(procs)
		return err == nil && len(bytes.TrimSpace(b)) == 0
	}) {
		b, _ := os.ReadFile(procs)
		t.Fatalf("processes left in the sandbox after the failed fork: %q", b)
	}
	if err := z.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(sb.Scratch(), "loading")); err != nil {
		t.Fatal(err)
	}
	inst, err := forkServe(ctx, z, sb, uid)
	if err != nil {
		t.Fatalf("retry into the same sandbox: %v", err)
	}
	defer inst.Close()
	if r := invokeJSON(t, ctx, sb); r["pid"] == nil {
		t.Errorf("invoke after retry: %v", r)
	}
}
