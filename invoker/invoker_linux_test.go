package invoker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/netns"
)

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newTestInvoker starts an invoker on unique state, registry and cgroup
// names, without a network manager unless opts say otherwise; when the
// test ends it closes it and checks that nothing is left.
func newTestInvoker(t testing.TB, opts ...Option) *Invoker {
	t.Helper()
	testutil.RequiresRoot(t)
	state := testutil.StateDir(t)
	cg := "/" + testutil.UniqueName(t)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	base := []Option{
		WithStateDir(state), WithRegistryDir(t.TempDir()), WithCgroupName(cg),
		WithNetwork(nil), WithPauseAfter(50 * time.Millisecond), WithGenericSandboxes(2), WithLogger(log),
	}
	iv, err := New(testCtx(t), append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := iv.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkNothingLeft(t, state, cg)
	})
	return iv
}

// checkNothingLeft: no mounts under the state directory, no cgroup
// directories of ours, no fork server in them.
func checkNothingLeft(t testing.TB, state, cg string) {
	t.Helper()
	testutil.CheckNothingLeft(t, state, cg)
	name := strings.TrimPrefix(cg, "/")
	out, _ := exec.Command("pgrep", "-f", "forkserver").Output()
	for _, f := range strings.Fields(string(out)) {
		data, err := os.ReadFile("/proc/" + f + "/cgroup")
		if err == nil && strings.Contains(string(data), name) {
			t.Errorf("fork server %s of ours still runs", f)
		}
	}
}

// functionCopy copies zygote/testdata/functions/<name> into a temporary
// directory, adding files (a manifest, a handler).
func functionCopy(t testing.TB, name string, files map[string]string) string {
	t.Helper()
	dst := t.TempDir()
	if name != "" {
		src := filepath.Join("..", "zygote", "testdata", "functions", name)
		entries, err := os.ReadDir(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(src, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for n, content := range files {
		if err := os.WriteFile(filepath.Join(dst, n), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func deploy(t testing.TB, iv *Invoker, name, dir string) *Function {
	t.Helper()
	fn, err := iv.Deploy(testCtx(t), name, FromDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	return fn
}

func invoke(t testing.TB, iv *Invoker, name, payload string) *Result {
	t.Helper()
	res, err := iv.Invoke(testCtx(t), name, []byte(payload), InvokeOptions{})
	if err != nil {
		t.Fatalf("invoke %s: %v", name, err)
	}
	return res
}

func instancesOf(iv *Invoker, name string) []InstanceStatus {
	var out []InstanceStatus
	for _, is := range iv.Status().Instances {
		if is.Function == name {
			out = append(out, is)
		}
	}
	return out
}

func eventually(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// TestInvokerColdWarmPaused: the first call forks (cold), the second
// reuses the instance (warm), one after PauseAfter resumes it (paused).
func TestInvokerColdWarmPaused(t *testing.T) {
	iv := newTestInvoker(t)
	deploy(t, iv, "hello", functionCopy(t, "hello", nil))

	res := invoke(t, iv, "hello", `{"name":"sock"}`)
	if res.Start != "cold" || res.FunctionError || string(res.Payload) != `{"hello": "sock"}` {
		t.Fatalf("first call: start %s, payload %s, function error %v", res.Start, res.Payload, res.FunctionError)
	}
	insts := instancesOf(iv, "hello")
	if len(insts) != 1 || insts[0].Pid == 0 || insts[0].Version != 1 {
		t.Fatalf("instances after the first call: %+v", insts)
	}
	first := insts[0].ID

	if res := invoke(t, iv, "hello", `{"name":"again"}`); res.Start != "warm" {
		t.Errorf("second call: start %s, want warm", res.Start)
	}
	if !eventually(2*time.Second, func() bool {
		is := instancesOf(iv, "hello")
		return len(is) == 1 && is[0].State == "paused"
	}) {
		t.Fatalf("instance not paused: %+v", instancesOf(iv, "hello"))
	}
	if res := invoke(t, iv, "hello", `{}`); res.Start != "paused" || string(res.Payload) != `{"hello": "world"}` {
		t.Errorf("call after pause: start %s payload %s, want paused", res.Start, res.Payload)
	}
	insts = instancesOf(iv, "hello")
	if len(insts) != 1 || insts[0].ID != first || insts[0].Invocations != 3 || insts[0].MemoryBytes == 0 {
		t.Errorf("instances: %+v, want the first one with 3 invocations", insts)
	}
	st := iv.Status()
	if st.Functions != 1 || len(st.Zygotes) == 0 || st.MemoryBytes == 0 {
		t.Errorf("status: %+v", st)
	}
	if !eventually(5*time.Second, func() bool { return iv.Status().GenericCached == 2 }) {
		t.Errorf("generic cache not refilled: %d", iv.Status().GenericCached)
	}
	// The handler's print reaches the function's log.
	if !eventually(2*time.Second, func() bool {
		b, _ := iv.Logs("hello", 4096)
		return bytes.Contains(b, []byte("hello called for sock"))
	}) {
		b, err := iv.Logs("hello", 4096)
		t.Errorf("logs: %q %v", b, err)
	}
	if _, err := iv.Invoke(testCtx(t), "nosuch", nil, InvokeOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown function: %v, want ErrNotFound", err)
	}
	if _, err := iv.Invoke(testCtx(t), "hello", make([]byte, MaxPayloadBytes+1), InvokeOptions{}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize payload: %v, want ErrTooLarge", err)
	}
}

// TestInvokerNumpyZygote: a numpy handler forks from the static numpy
// zygote.
func TestInvokerNumpyZygote(t *testing.T) {
	iv := newTestInvoker(t, WithZygotes([][]string{{"numpy"}}))
	fn := deploy(t, iv, "np", functionCopy(t, "numpy", map[string]string{"sockfaas.yaml": "requirements: [numpy]\n"}))
	if !slices.Equal(fn.Imports, []string{"numpy"}) {
		t.Fatalf("imports %v", fn.Imports)
	}
	res := invoke(t, iv, "np", `{"values":[1,2,39]}`)
	if res.Start != "cold" || string(res.Payload) != `{"sum": 42}` {
		t.Fatalf("numpy: start %s payload %s", res.Start, res.Payload)
	}
	var forks uint64
	for _, z := range iv.Status().Zygotes {
		if slices.Contains(z.Packages, "numpy") {
			forks = z.Forks
		}
	}
	if forks != 1 {
		t.Errorf("numpy zygote forks %d, want 1 (zygotes %+v)", forks, iv.Status().Zygotes)
	}
}

// TestInvokerHandlerError: an exception is a Result with FunctionError,
// and the instance stays.
func TestInvokerHandlerError(t *testing.T) {
	iv := newTestInvoker(t)
	deploy(t, iv, "raises", functionCopy(t, "raises", nil))
	res := invoke(t, iv, "raises", `{"v": 7}`)
	if !res.FunctionError || !bytes.Contains(res.Payload, []byte(`"errorType": "ValueError"`)) &&
		!bytes.Contains(res.Payload, []byte(`"errorType":"ValueError"`)) {
		t.Fatalf("raises: function error %v payload %s", res.FunctionError, res.Payload)
	}
	if res := invoke(t, iv, "raises", `{"v": 8}`); res.Start != "warm" {
		t.Errorf("after a handler error: start %s, want warm", res.Start)
	}
	// A handler that does not import is a function error too.
	deploy(t, iv, "broken", functionCopy(t, "", map[string]string{
		"lambda_function.py": "import nosuchmodule\n\ndef lambda_handler(event, context):\n    return 1\n",
	}))
	if res := invoke(t, iv, "broken", `{}`); !res.FunctionError || !bytes.Contains(res.Payload, []byte("nosuchmodule")) {
		t.Errorf("import error: function error %v payload %s", res.FunctionError, res.Payload)
	}
}

// TestInvokerTimeout: a call past the function's timeout kills the
// instance and fails with ErrTimeout; the next call gets a new instance.
func TestInvokerTimeout(t *testing.T) {
	iv := newTestInvoker(t)
	deploy(t, iv, "slow", functionCopy(t, "slow", map[string]string{"sockfaas.yaml": "timeout_sec: 1\n"}))
	invoke(t, iv, "slow", `{"ms": 0}`)
	old := instancesOf(iv, "slow")[0]
	start := time.Now()
	_, err := iv.Invoke(testCtx(t), "slow", []byte(`{"ms": 5000}`), InvokeOptions{})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "Task timed out after 1.00 seconds") {
		t.Fatalf("slow call: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("timeout took %v", d)
	}
	if !eventually(2*time.Second, func() bool { return len(instancesOf(iv, "slow")) == 0 }) {
		t.Errorf("timed-out instance still listed: %+v", instancesOf(iv, "slow"))
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", old.Pid)); err == nil {
		t.Errorf("timed-out instance's pid %d still exists", old.Pid)
	}
	res := invoke(t, iv, "slow", `{"ms": 1}`)
	if res.Start != "cold" || instancesOf(iv, "slow")[0].ID == old.ID {
		t.Errorf("after a timeout: start %s, want a new instance", res.Start)
	}
	// A shorter per-call timeout wins.
	_, err = iv.Invoke(testCtx(t), "slow", []byte(`{"ms": 2000}`), InvokeOptions{Timeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("per-call timeout: %v", err)
	}
}

// TestInvokerCrash: a handler that kills its interpreter fails the call
// with ErrFunctionCrashed; the invoker carries on.
func TestInvokerCrash(t *testing.T) {
	iv := newTestInvoker(t)
	deploy(t, iv, "crash", functionCopy(t, "", map[string]string{
		"lambda_function.py": "import os\n\ndef lambda_handler(event, context):\n    if event.get('die'):\n        os._exit(1)\n    return 'ok'\n",
	}))
	_, err := iv.Invoke(testCtx(t), "crash", []byte(`{"die": true}`), InvokeOptions{})
	if !errors.Is(err, ErrFunctionCrashed) {
		t.Fatalf("crash: %v, want ErrFunctionCrashed", err)
	}
	t.Logf("crash error: %v", err)
	if res := invoke(t, iv, "crash", `{}`); string(res.Payload) != `"ok"` || res.Start != "cold" {
		t.Errorf("after a crash: start %s payload %s", res.Start, res.Payload)
	}
}

// TestInvokerOverload: beyond the concurrency limit and the queue, calls
// are refused with ErrOverloaded; the others succeed.
func TestInvokerOverload(t *testing.T) {
	iv := newTestInvoker(t, WithMaxConcurrency(2), WithQueue(4))
	deploy(t, iv, "slow", functionCopy(t, "slow", nil))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, overloaded int
	var other []error
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := iv.Invoke(testCtx(t), "slow", []byte(`{"ms": 300}`), InvokeOptions{})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrOverloaded):
				overloaded++
			default:
				other = append(other, err)
			}
		}()
	}
	wg.Wait()
	t.Logf("ok %d, overloaded %d", ok, overloaded)
	if len(other) > 0 || overloaded == 0 || ok < 6 {
		t.Errorf("ok %d, overloaded %d, other %v", ok, overloaded, other)
	}
	if n := len(instancesOf(iv, "slow")); n > 2 {
		t.Errorf("%d instances, want at most 2", n)
	}
}

// TestAsyncInvoke: an async call's result can be fetched by its ID.
func TestAsyncInvoke(t *testing.T) {
	iv := newTestInvoker(t)
	deploy(t, iv, "hello", functionCopy(t, "hello", nil))
	id, err := iv.InvokeAsync(testCtx(t), "hello", []byte(`{"name":"async"}`), InvokeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var res *Result
	if !eventually(10*time.Second, func() bool {
		r, done, err := iv.AsyncResult(id)
		if err != nil {
			t.Fatalf("async result: %v", err)
		}
		res = r
		return done
	}) {
		t.Fatal("async call did not finish")
	}
	if string(res.Payload) != `{"hello": "async"}` || res.RequestID != id {
		t.Errorf("async result: %+v", res)
	}
	if _, _, err := iv.AsyncResult("0123"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	if _, err := iv.InvokeAsync(testCtx(t), "nosuch", nil, InvokeOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown function: %v", err)
	}
}

// TestAsyncQueueBounds: a full queue refuses; old results are forgotten.
func TestAsyncQueueBounds(t *testing.T) {
	block := make(chan struct{})
	q := newAsyncQueue(func(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error) {
		<-block
		return &Result{Payload: payload}, nil
	}, 1, 2, zerolog.Nop())
	q.max = 3
	var ids []string
	for i := range 3 { // one running, two queued
		id, err := q.submit("f", []byte(strconv.Itoa(i)), InvokeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if i == 0 {
			eventually(time.Second, func() bool { return len(q.jobs) == 0 })
		}
	}
	if _, err := q.submit("f", nil, InvokeOptions{}); !errors.Is(err, ErrOverloaded) {
		t.Errorf("full queue: %v", err)
	}
	close(block)
	if !eventually(time.Second, func() bool { _, done, _ := q.result(ids[2]); return done }) {
		t.Fatal("jobs did not finish")
	}
	if _, err := q.submit("f", nil, InvokeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.result(ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("oldest result kept beyond the cap: %v", err)
	}
	if err := q.close(context.Background()); err != nil {
		t.Error(err)
	}
}

// TestInvokerRemove: Remove stops the function's instances.
func TestInvokerRemove(t *testing.T) {
	iv := newTestInvoker(t)
	deploy(t, iv, "hello", functionCopy(t, "hello", nil))
	invoke(t, iv, "hello", `{}`)
	pid := instancesOf(iv, "hello")[0].Pid
	if err := iv.Remove(testCtx(t), "hello"); err != nil {
		t.Fatal(err)
	}
	if is := instancesOf(iv, "hello"); len(is) != 0 {
		t.Errorf("instances after Remove: %+v", is)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("pid %d still exists", pid)
	}
	if _, err := iv.Invoke(testCtx(t), "hello", nil, InvokeOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("invoke after Remove: %v", err)
	}
	// Deployed again, it starts over at version 1 with a new instance.
	deploy(t, iv, "hello", functionCopy(t, "hello", nil))
	if res := invoke(t, iv, "hello", `{}`); res.Start != "cold" {
		t.Errorf("after redeploy: %s", res.Start)
	}
}

// TestRouteRedeploy: a new version drains the old one's idle instances.
func TestRouteRedeploy(t *testing.T) {
	iv := newTestInvoker(t)
	deploy(t, iv, "hello", functionCopy(t, "hello", nil))
	invoke(t, iv, "hello", `{}`)
	deploy(t, iv, "hello", functionCopy(t, "hello", map[string]string{"sockfaas.yaml": "environment: {X: y}\n"}))
	if res := invoke(t, iv, "hello", `{}`); res.Start != "cold" {
		t.Errorf("new version: start %s, want cold", res.Start)
	}
	if !eventually(2*time.Second, func() bool {
		is := instancesOf(iv, "hello")
		return len(is) == 1 && is[0].Version == 2
	}) {
		t.Errorf("instances: %+v", instancesOf(iv, "hello"))
	}
}

// TestRouteFreshFallback: without a zygote, a cold start runs a fresh
// interpreter.
func TestRouteFreshFallback(t *testing.T) {
	iv := newTestInvoker(t)
	iv.noZygote.Store(true)
	deploy(t, iv, "hello", functionCopy(t, "hello", nil))
	res := invoke(t, iv, "hello", `{"name":"fresh"}`)
	if res.Start != "fresh" || string(res.Payload) != `{"hello": "fresh"}` {
		t.Fatalf("fresh: start %s payload %s", res.Start, res.Payload)
	}
	if res := invoke(t, iv, "hello", `{}`); res.Start != "warm" {
		t.Errorf("second: %s", res.Start)
	}
	// Non-default limits take a purpose-made sandbox on the zygote path.
	iv.noZygote.Store(false)
	deploy(t, iv, "big", functionCopy(t, "hello", map[string]string{"sockfaas.yaml": "memory_mb: 256\ncpu_millis: 500\n"}))
	if res := invoke(t, iv, "big", `{}`); res.Start != "cold" {
		t.Errorf("big: %s", res.Start)
	}
}

// TestInvokerNetwork runs with a real network manager: a shared slot.
func TestInvokerNetwork(t *testing.T) {
	testutil.RequiresRoot(t)
	var b [2]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	iv := newTestInvoker(t, WithNetwork(&netns.Config{
		Bridge: "sft" + h, ChainPrefix: "SF-I" + h + "-", Subnet: freeSubnet(t), Slots: 2, NonePool: -1,
	}))
	deploy(t, iv, "net", functionCopy(t, "", map[string]string{
		"lambda_function.py": "import socket\n\ndef lambda_handler(event, context):\n" +
			"    return sorted(n for _, n in socket.if_nameindex())\n",
	}))
	res := invoke(t, iv, "net", `{}`)
	if res.FunctionError {
		t.Fatalf("net: %s", res.Payload)
	}
	if !strings.Contains(string(res.Payload), `"lo"`) || string(res.Payload) == `["lo"]` {
		t.Errorf("interfaces %s: want lo and the slot's link", res.Payload)
	}
	// The instance is in the slot's namespace, not the zygote's.
	pid := instancesOf(iv, "net")[0].Pid
	own, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	host, err2 := os.Readlink("/proc/self/ns/net")
	if err1 != nil || err2 != nil || own == host {
		t.Errorf("instance netns %s (%v), host %s (%v)", own, err1, host, err2)
	}
}

// freeSubnet picks a random 10.x.y.0/24 that no route on the host
// overlaps.
func freeSubnet(t testing.TB) netip.Prefix {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		var b [2]byte
		_, _ = rand.Read(b[:])
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 150 + b[0]%50, b[1], 0}), 24)
		taken := false
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
			ones, _ := r.Dst.Mask.Size()
			if ones == 0 { // the default route
				continue
			}
			if netip.PrefixFrom(a, ones).Masked().Overlaps(p) {
				taken = true
			}
		}
		if !taken {
			return p
		}
	}
	t.Fatal("no free subnet")
	return netip.Prefix{}
}

// BenchmarkInvoke: warm calls back to back.
func BenchmarkInvoke(b *testing.B) {
	iv := newTestInvoker(b, WithPauseAfter(-1))
	deploy(b, iv, "hello", functionCopy(b, "hello", nil))
	ctx := testCtx(b)
	payload := []byte(`{"name":"bench"}`)
	if _, err := iv.Invoke(ctx, "hello", payload, InvokeOptions{}); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		res, err := iv.Invoke(ctx, "hello", payload, InvokeOptions{})
		lat = append(lat, time.Since(t0))
		if err != nil || res.Start != "warm" {
			b.Fatalf("%v %+v", err, res)
		}
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
}

// TestInvokerLogsRotate: a function's log is capped and rotated, and the
// tail reaches into the rotated file.
func TestInvokerLogsRotate(t *testing.T) {
	l, err := newLogs(t.TempDir(), 100, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	w, err := l.writer("f")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		fmt.Fprintf(w, "line %02d\n", i) // 8 bytes each
	}
	want := ""
	for i := 20; i < 30; i++ {
		want += fmt.Sprintf("line %02d\n", i)
	}
	if !eventually(2*time.Second, func() bool { b, _ := l.tail("f", 80); return string(b) == want }) {
		b, err := l.tail("f", 80)
		t.Errorf("tail: %q %v, want %q", b, err, want)
	}
	cur, _ := os.ReadFile(filepath.Join(l.dir, "f.log"))
	if len(cur) > 100 {
		t.Errorf("log file %d bytes, cap 100", len(cur))
	}
	if _, err := l.tail("other", 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown log: %v", err)
	}
	l.close()
}
