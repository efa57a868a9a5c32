package natsgw

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/invoker"
	"github.com/sockfaas/sockfaas/sandbox/lean"
)

// These tests run two real invokers as two hosts that share one NATS server
// (embedded): real sandboxes, zygotes and Python handlers on both sides.

// The functions, shared with package invoker's tests of the local queue:
// caller does what its event says through the SDK.
var (
	callerCode = testdataFile("caller.py")
	echoCode   = testdataFile("echo.py")
	boomCode   = testdataFile("boom.py")
	sleepyCode = testdataFile("sleepy.py")
)

func testdataFile(name string) string {
	b, err := os.ReadFile(filepath.Join("..", "testdata", "sdk", name))
	if err != nil {
		panic(err)
	}
	return string(b)
}

// host is one invoker and its gateway.
type host struct {
	iv    *invoker.Invoker
	gw    *Gateway
	state string
	cg    string
}

// newHost starts an invoker whose upstream is a gateway to url, named id;
// the test's cleanup closes both and checks nothing is left.
func newHost(t *testing.T, url, id string, opts ...invoker.Option) *host {
	t.Helper()
	testutil.RequiresRoot(t)
	h := &host{state: testutil.StateDir(t), cg: "/" + testutil.UniqueName(t)}
	h.gw = newGateway(t, testConfig(t, url, id))
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("test-host", id).Logger()
	base := []invoker.Option{
		invoker.WithStateDir(h.state), invoker.WithRegistryDir(t.TempDir()), invoker.WithCgroupName(h.cg),
		invoker.WithNetwork(nil), invoker.WithGenericSandboxes(1), invoker.WithLogger(log), invoker.WithUpstream(h.gw),
	}
	iv, err := invoker.New(context.Background(), append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	h.iv = iv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := iv.Close(ctx); err != nil {
			t.Errorf("close invoker %s: %v", id, err)
		}
		if err := h.gw.Close(ctx); err != nil {
			t.Errorf("close gateway %s: %v", id, err)
		}
		testutil.CheckNothingLeft(t, h.state, h.cg)
	})
	return h
}

func deployCode(t *testing.T, iv *invoker.Invoker, name, code, manifest string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "lambda_function.py"), []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	if manifest != "" {
		if err := os.WriteFile(filepath.Join(dir, "sockfaas.yaml"), []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := iv.Deploy(context.Background(), name, invoker.FromDir(dir)); err != nil {
		t.Fatal(err)
	}
}

// waitServed waits until the gateway of from knows that a host serves
// each of names (its heartbeat, every 100 ms here).
func waitServed(t *testing.T, from *Gateway, names ...string) {
	t.Helper()
	for _, name := range names {
		waitFor(t, 5*time.Second, name+" to be served", func() bool { return from.served(context.Background(), name) })
	}
}

func callVia(t *testing.T, iv *invoker.Invoker, caller string, event map[string]any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(event)
	res, err := iv.Invoke(context.Background(), caller, b, invoker.InvokeOptions{})
	if err != nil {
		t.Fatalf("invoke %s: %v", caller, err)
	}
	if res.FunctionError {
		t.Fatalf("%s raised: %s", caller, res.Payload)
	}
	var out map[string]any
	if err := json.Unmarshal(res.Payload, &out); err != nil {
		t.Fatalf("%s answered %s: %v", caller, res.Payload, err)
	}
	return out
}

// TestTwoHosts: a function on host A calls functions deployed only on host
// B, synchronously and asynchronously, and gets results and errors as if
// they were local; a call from outside to A for a function only B serves
// is passed on.
func TestTwoHosts(t *testing.T) {
	srv := startServer(t, "", "")
	a := newHost(t, srv.URL(), "a")
	b := newHost(t, srv.URL(), "b")
	deployCode(t, a.iv, "caller", callerCode, "timeout_sec: 2\n")
	deployCode(t, b.iv, "echo", echoCode, "")
	deployCode(t, b.iv, "boom", boomCode, "")
	deployCode(t, b.iv, "sleepy", sleepyCode, "")
	waitServed(t, a.gw, "echo", "boom", "sleepy")

	out := callVia(t, a.iv, "caller", map[string]any{"to": "echo", "event": map[string]any{"x": 1}})
	r, _ := out["result"].(map[string]any)
	if r == nil || fmt.Sprint(r["echo"]) != "map[x:1]" || r["rid"] == "" {
		t.Fatalf("call to host b: %v", out)
	}
	// The callee on B inherits the caller's deadline (2 s, less the
	// reserve), across hosts.
	if rem, _ := r["remaining"].(float64); rem <= 0 || rem > 2000-float64(invoker.CallReserve.Milliseconds()) {
		t.Errorf("callee's remaining time %v ms", r["remaining"])
	}

	out = callVia(t, a.iv, "caller", map[string]any{"to": "boom", "event": map[string]any{"why": "remote"}})
	if fe, _ := out["function_error"].(map[string]any); fe == nil || fe["type"] != "ValueError" || fe["message"] != "boom: remote" {
		t.Errorf("callee on b raised: %v", out)
	}
	for _, c := range []struct {
		event map[string]any
		kind  string
		text  string
	}{
		{map[string]any{"to": "nosuch"}, "NotFound", "no host serves it"},
		{map[string]any{"op": "big", "to": "echo"}, "TooLarge", "limit"},
		{map[string]any{"to": "sleepy", "event": map[string]any{"sec": 10}}, "Timeout", "timed out"},
	} {
		start := time.Now()
		out := callVia(t, a.iv, "caller", c.event)
		ie, _ := out["invoke_error"].(map[string]any)
		if ie == nil || ie["kind"] != c.kind || !strings.Contains(ie["message"].(string), c.text) {
			t.Errorf("%v: %v", c.event, out)
		}
		if c.kind == "Timeout" && time.Since(start) > 3*time.Second {
			t.Errorf("the deadline passed but the call took %v", time.Since(start))
		}
	}
	// B killed the instance that ran past the caller's deadline.
	waitFor(t, 5*time.Second, "sleepy's instance to go", func() bool {
		for _, is := range b.iv.Status().Instances {
			if is.Function == "sleepy" && is.State == "busy" {
				return false
			}
		}
		return true
	})

	// An event from a function on A to a function on B.
	out = callVia(t, a.iv, "caller", map[string]any{"op": "async", "to": "echo", "event": map[string]any{"n": 7}})
	id, _ := out["id"].(string)
	if id == "" {
		t.Fatalf("invoke_async: %v", out)
	}
	var res *invoker.Result
	waitFor(t, 10*time.Second, "the event to run on b", func() bool {
		r, done, err := b.iv.AsyncResult(id)
		res = r
		return done && err == nil
	})
	var got map[string]any
	if err := json.Unmarshal(res.Payload, &got); err != nil || got["rid"] != id || fmt.Sprint(got["echo"]) != "map[n:7]" {
		t.Errorf("event result on b: %s", res.Payload)
	}
	// A knows where it went.
	if _, _, err := a.iv.AsyncResult(id); !errors.Is(err, invoker.ErrNotFound) || !strings.Contains(err.Error(), "handed to the hosts that serve") {
		t.Errorf("the result of a handed-on event on a: %v", err)
	}

	// An event B serves itself has a backup copy until it is done.
	id, err := b.iv.InvokeAsync(context.Background(), "echo", []byte(`{"local":true}`), invoker.InvokeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the local event to run", func() bool {
		_, done, _ := b.iv.AsyncResult(id)
		return done
	})
	waitFor(t, 5*time.Second, "its backup copy to go", func() bool {
		info, err := b.gw.backups.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})

	// From outside: A passes on what it does not serve.
	res, err = a.iv.Invoke(context.Background(), "echo", []byte(`{"via":"a"}`), invoker.InvokeOptions{})
	if err != nil || !strings.Contains(string(res.Payload), `"via": "a"`) {
		t.Errorf("outside call through a: %v %v", res, err)
	}
	if _, err := a.iv.Invoke(context.Background(), "nosuch", nil, invoker.InvokeOptions{}); !errors.Is(err, invoker.ErrNotFound) {
		t.Errorf("outside call for a function nobody serves: %v", err)
	}
	// A function deployed on B is served from A as soon as Deploy returns
	// (no waiting for a heartbeat), and not after Remove.
	deployCode(t, b.iv, "late", echoCode, "")
	if _, err := a.iv.Invoke(context.Background(), "late", []byte(`{}`), invoker.InvokeOptions{}); err != nil {
		t.Errorf("call right after the deploy on b: %v", err)
	}
	if _, err := a.iv.InvokeAsync(context.Background(), "late", []byte(`{}`), invoker.InvokeOptions{}); err != nil {
		t.Errorf("event right after the deploy on b: %v", err)
	}
	if err := b.iv.Remove(context.Background(), "late"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.iv.Invoke(context.Background(), "late", []byte(`{}`), invoker.InvokeOptions{}); !errors.Is(err, invoker.ErrNotFound) {
		t.Errorf("call right after the removal on b: %v", err)
	}
}

// TestOffload: a call a host has no room for goes to another host that
// serves the function; with no room anywhere, it is refused as before.
func TestOffload(t *testing.T) {
	srv := startServer(t, "", "")
	a := newHost(t, srv.URL(), "a", invoker.WithMaxConcurrency(1), invoker.WithQueue(0))
	b := newHost(t, srv.URL(), "b")
	deployCode(t, a.iv, "sleepy", sleepyCode, "")
	deployCode(t, b.iv, "sleepy", sleepyCode, "")
	waitFor(t, 5*time.Second, "a to see b serve sleepy", func() bool {
		a.gw.mu.Lock()
		defer a.gw.mu.Unlock()
		return slices.Contains(a.gw.peers["b"].Functions, "sleepy")
	})
	ctx := context.Background()
	busy := make(chan error, 1)
	go func() {
		_, err := a.iv.Invoke(ctx, "sleepy", []byte(`{"sec": 2}`), invoker.InvokeOptions{})
		busy <- err
	}()
	waitFor(t, 10*time.Second, "a to be busy", func() bool {
		for _, is := range a.iv.Status().Instances {
			if is.State == "busy" {
				return true
			}
		}
		return false
	})
	res, err := a.iv.Invoke(ctx, "sleepy", []byte(`{"sec": 0}`), invoker.InvokeOptions{})
	if err != nil || string(res.Payload) != `"woke"` {
		t.Fatalf("offloaded call: %v %v", res, err)
	}
	if n := len(b.iv.Status().Instances); n != 1 {
		t.Errorf("b has %d instances, want the one that took the call", n)
	}
	if err := <-busy; err != nil {
		t.Error(err)
	}
}

// TestHandedOnComesBack: a host whose async queue is full hands events to
// the events stream; serving the function itself, it may take them back
// later, and then runs them (they are not duplicates of a run).
func TestHandedOnComesBack(t *testing.T) {
	srv := startServer(t, "", "")
	a := newHost(t, srv.URL(), "a", invoker.WithAsync(1, 1))
	deployCode(t, a.iv, "sleepy", sleepyCode, "")
	ctx := context.Background()
	var ids []string
	for i := range 4 {
		id, err := a.iv.InvokeAsync(ctx, "sleepy", fmt.Appendf(nil, `{"sec": 0.2, "i": %d}`, i), invoker.InvokeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		waitFor(t, 20*time.Second, "event "+id+" to run", func() bool {
			res, done, err := a.iv.AsyncResult(id)
			return done && err == nil && string(res.Payload) == `"woke"`
		})
	}
}

// The helper process of TestHostKilled: host A, which takes events and
// dies (SIGKILL) while running them.
const helperEnv = "SOCKFAAS_NATSGW_TEST_HOST"

type helperConfig struct {
	URL, State, Cgroup, Registry, Code string
	Events                             int
}

func TestHelperHost(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("the helper process of TestHostKilled")
	}
	var hc helperConfig
	if err := json.Unmarshal([]byte(spec), &hc); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	gw, err := New(ctx, testConfig(t, hc.URL, "a"))
	if err != nil {
		t.Fatal(err)
	}
	iv, err := invoker.New(ctx, invoker.WithStateDir(hc.State), invoker.WithRegistryDir(hc.Registry),
		invoker.WithCgroupName(hc.Cgroup), invoker.WithNetwork(nil), invoker.WithGenericSandboxes(1),
		invoker.WithUpstream(gw), invoker.WithAsync(2, 100))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iv.Deploy(ctx, "work", invoker.FromDir(hc.Code)); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for i := range hc.Events {
		rid := fmt.Sprintf("req-%d", i)
		id, err := iv.InvokeAsync(ctx, "work", fmt.Appendf(nil, `{"i":%d}`, i), invoker.InvokeOptions{RequestID: rid})
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = rid
	}
	out, _ := json.Marshal(ids)
	fmt.Printf("IDS %s\n", out)
	select {} // until killed
}

// TestHostKilled: host A is SIGKILLed while it runs (and holds queued)
// asynchronous events; host B runs every one of them, with the request ID
// A gave it (the idempotency key); A's leftovers are cleaned up.
func TestHostKilled(t *testing.T) {
	testutil.RequiresRoot(t)
	srv := startServer(t, "", "")
	b := newHost(t, srv.URL(), "b")
	// On B, work answers at once; on A it sleeps, so A dies mid-flight.
	work := `import time

def lambda_handler(event, context):
    time.sleep(%d)
    return {"rid": context.aws_request_id, "i": event["i"]}
`
	deployCode(t, b.iv, "work", fmt.Sprintf(work, 0), "")

	hc := helperConfig{URL: srv.URL(), State: testutil.StateDir(t), Cgroup: "/" + testutil.UniqueName(t),
		Registry: t.TempDir(), Code: t.TempDir(), Events: 6}
	if err := os.WriteFile(filepath.Join(hc.Code, "lambda_function.py"), fmt.Appendf(nil, work, 60), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(hc)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHost$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		// What the next start of A would do: clean up after the killed owner.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := lean.Cleanup(ctx, filepath.Join(hc.State, "lean"), hc.Cgroup, zerolog.Nop()); err != nil {
			t.Errorf("clean up after host a: %v", err)
		}
		testutil.CheckNothingLeft(t, hc.State, hc.Cgroup)
	})
	ids := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "IDS "); ok {
			if err := json.Unmarshal([]byte(rest), &ids); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if len(ids) != hc.Events {
		t.Fatalf("host a queued %d events, want %d", len(ids), hc.Events)
	}
	go func() { _, _ = bufio.NewReader(stdout).WriteTo(os.Stdout) }()

	// Let A start running some (2 workers) while the rest wait in its
	// queue, then kill it.
	time.Sleep(time.Second)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed = true
	killedAt := time.Now()

	for id, rid := range ids {
		var res *invoker.Result
		var err error
		waitFor(t, 30*time.Second, "event "+id+" to run on b", func() bool {
			var done bool
			res, done, err = b.iv.AsyncResult(id)
			return done
		})
		if err != nil {
			t.Errorf("event %s: %v", id, err)
			continue
		}
		var got map[string]any
		if err := json.Unmarshal(res.Payload, &got); err != nil || got["rid"] != rid {
			t.Errorf("event %s ran on b as %s, want request id %s", id, res.Payload, rid)
		}
	}
	t.Logf("b ran all %d events of the killed host within %v of the kill", len(ids), time.Since(killedAt).Round(time.Millisecond))
	waitFor(t, 10*time.Second, "the backups and events streams to be empty", func() bool {
		bi, err1 := b.gw.backups.Info(context.Background())
		ei, err2 := b.gw.events.Info(context.Background())
		return err1 == nil && err2 == nil && bi.State.Msgs == 0 && ei.State.Msgs == 0
	})
}
