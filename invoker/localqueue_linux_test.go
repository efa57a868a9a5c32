package invoker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The local queue's functions: a caller that does what its event says
// through the SDK, and the callees it calls. The first four are in
// testdata/sdk, which package natsgw's tests share.
var (
	callerHandler = testdataFile("sdk/caller.py")
	echoHandler   = testdataFile("sdk/echo.py")
	boomHandler   = testdataFile("sdk/boom.py")
	sleepyHandler = testdataFile("sdk/sleepy.py")
)

// testdataFile is a file under testdata; a test binary without it fails
// at once.
func testdataFile(name string) string {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		panic(err)
	}
	return string(b)
}

const (
	recursiveHandler = `import sockfaas

def lambda_handler(event, context):
    n = event["n"]
    try:
        return sockfaas.invoke("rec", {"n": n + 1})
    except sockfaas.InvokeError as e:
        return {"stopped_at": n, "kind": e.kind, "message": str(e)}
`
	// flaky prints the id it was called with, then fails.
	flakyHandler = `def lambda_handler(event, context):
    print("attempt rid=%s" % context.aws_request_id, flush=True)
    raise RuntimeError("flaky fails")
`
)

func deployHandler(t testing.TB, iv *Invoker, name, code, manifest string) {
	t.Helper()
	files := map[string]string{"lambda_function.py": code}
	if manifest != "" {
		files["sockfaas.yaml"] = manifest
	}
	deploy(t, iv, name, functionCopy(t, "", files))
}

// callVia invokes the caller function with event and decodes its answer.
func callVia(t testing.TB, iv *Invoker, caller string, event map[string]any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(event)
	res := invoke(t, iv, caller, string(b))
	if res.FunctionError {
		t.Fatalf("%s raised: %s", caller, res.Payload)
	}
	var out map[string]any
	if err := json.Unmarshal(res.Payload, &out); err != nil {
		t.Fatalf("%s answered %s: %v", caller, res.Payload, err)
	}
	return out
}

// TestLocalCall: a function calls another and gets its result; the
// callee's handler error reaches the caller as FunctionError, which it can
// catch or let through; bad calls fail with clear errors.
func TestLocalCall(t *testing.T) {
	iv := newTestInvoker(t)
	deployHandler(t, iv, "caller", callerHandler, "")
	deployHandler(t, iv, "echo", echoHandler, "")
	deployHandler(t, iv, "boom", boomHandler, "")

	out := callVia(t, iv, "caller", map[string]any{"to": "echo", "event": map[string]any{"x": 1}})
	r, _ := out["result"].(map[string]any)
	if r == nil || fmt.Sprint(r["echo"]) != "map[x:1]" || r["rid"] == "" {
		t.Fatalf("call result: %v", out)
	}
	// The callee inherits the caller's deadline (3 s, less the reserve).
	if rem, _ := r["remaining"].(float64); rem <= 0 || rem > 3000-float64(CallReserve.Milliseconds()) {
		t.Errorf("callee's remaining time %v ms", r["remaining"])
	}

	out = callVia(t, iv, "caller", map[string]any{"to": "boom", "event": map[string]any{"why": "test"}})
	fe, _ := out["function_error"].(map[string]any)
	if fe == nil || fe["type"] != "ValueError" || fe["message"] != "boom: test" || len(fe["stack"].([]any)) == 0 {
		t.Errorf("callee raised: %v", out)
	}
	res := invoke(t, iv, "caller", `{"op": "uncaught", "to": "boom"}`)
	if !res.FunctionError || !strings.Contains(string(res.Payload), "boom raised ValueError: boom: None") ||
		!strings.Contains(string(res.Payload), `"errorType": "FunctionError"`) {
		t.Errorf("uncaught callee error: %s", res.Payload)
	}

	for _, c := range []struct {
		event map[string]any
		kind  string
		text  string
	}{
		{map[string]any{"to": "nosuch"}, "NotFound", `"nosuch" is not deployed`},
		{map[string]any{"to": "Bad Name!"}, "Invalid", "invalid"},
		{map[string]any{"op": "big", "to": "echo"}, "TooLarge", "over the 6291456-byte limit"},
	} {
		out := callVia(t, iv, "caller", c.event)
		ie, _ := out["invoke_error"].(map[string]any)
		if ie == nil || ie["kind"] != c.kind || !strings.Contains(ie["message"].(string), c.text) {
			t.Errorf("%v: %v", c.event, out)
		}
	}
}

// TestLocalCallDepth: a function calling itself stops at the depth limit
// with a clear error.
func TestLocalCallDepth(t *testing.T) {
	iv := newTestInvoker(t)
	deployHandler(t, iv, "rec", recursiveHandler, "timeout_sec: 60\n")
	res, err := iv.Invoke(testCtx(t), "rec", []byte(`{"n": 1}`), InvokeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		StoppedAt int    `json:"stopped_at"`
		Kind      string `json:"kind"`
		Message   string `json:"message"`
	}
	if err := json.Unmarshal(res.Payload, &out); err != nil {
		t.Fatalf("%s: %v", res.Payload, err)
	}
	if out.StoppedAt != DefaultMaxCallDepth || out.Kind != "CallDepth" ||
		!strings.Contains(out.Message, "the limit is 8") || !strings.Contains(out.Message, "rec → rec") {
		t.Errorf("recursion: %+v", out)
	}
}

// TestLocalCallDeadline: a callee with a longer timeout than its caller
// is cut at the caller's remaining time, and the caller learns it in time
// to answer.
func TestLocalCallDeadline(t *testing.T) {
	iv := newTestInvoker(t)
	deployHandler(t, iv, "caller", callerHandler, "timeout_sec: 2\n")
	deployHandler(t, iv, "sleepy", sleepyHandler, "timeout_sec: 10\n")
	begin := time.Now()
	out := callVia(t, iv, "caller", map[string]any{"to": "sleepy", "event": map[string]any{"sec": 5}})
	took := time.Since(begin)
	ie, _ := out["invoke_error"].(map[string]any)
	elapsed, _ := out["elapsed"].(float64)
	if ie == nil || ie["kind"] != "Timeout" || elapsed < 1.5 || elapsed > 2 {
		t.Errorf("slow callee: %v", out)
	}
	if took > 3*time.Second {
		t.Errorf("the chain took %v", took)
	}
	// Its instance was killed, as on any timeout.
	if !eventually(5*time.Second, func() bool { return len(instancesOf(iv, "sleepy")) == 0 }) {
		t.Errorf("timed-out callee still has instances: %+v", instancesOf(iv, "sleepy"))
	}
}

// TestLocalQueueAsync: an event from a function is delivered; a failing
// one is retried with the same id and then dead-lettered; so is one queued
// over the Go API.
func TestLocalQueueAsync(t *testing.T) {
	iv := newTestInvoker(t, WithAsyncRetry(RetryPolicy{Attempts: 3, Backoff: 20 * time.Millisecond, MaxBackoff: time.Second}))
	deployHandler(t, iv, "caller", callerHandler, "")
	deployHandler(t, iv, "echo", echoHandler, "")
	deployHandler(t, iv, "flaky", flakyHandler, "")

	wait := func(id string) *Result {
		t.Helper()
		var res *Result
		var rerr error
		if !eventually(20*time.Second, func() bool {
			r, done, err := iv.AsyncResult(id)
			res, rerr = r, err
			return done || (err != nil && !strings.Contains(err.Error(), "not found"))
		}) {
			t.Fatalf("event %s not done", id)
		}
		if rerr != nil {
			t.Fatalf("event %s: %v", id, rerr)
		}
		return res
	}

	out := callVia(t, iv, "caller", map[string]any{"op": "async", "to": "echo", "event": map[string]any{"k": "v"}})
	id, _ := out["id"].(string)
	if id == "" {
		t.Fatalf("async: %v", out)
	}
	res := wait(id)
	var echo struct {
		Echo map[string]string `json:"echo"`
		RID  string            `json:"rid"`
	}
	if err := json.Unmarshal(res.Payload, &echo); err != nil || echo.Echo["k"] != "v" || echo.RID != id {
		t.Errorf("delivered event: %s (%v), id %s", res.Payload, err, id)
	}

	out = callVia(t, iv, "caller", map[string]any{"op": "async", "to": "flaky"})
	fromFn, _ := out["id"].(string)
	fromAPI, err := iv.InvokeAsync(testCtx(t), "flaky", []byte(`{}`), InvokeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{fromFn, fromAPI} {
		if res := wait(id); !res.FunctionError {
			t.Errorf("event %s: %s", id, res.Payload)
		}
	}
	dead := iv.DeadLetters()
	if len(dead) != 2 {
		t.Fatalf("dead letters: %+v", dead)
	}
	logs, err := iv.Logs("flaky", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dead {
		want := map[string]string{fromFn: "caller@1", fromAPI: ""}
		caller, ok := want[d.ID]
		if !ok || d.Caller != caller || d.Function != "flaky" || d.Attempts != 3 || !d.FunctionError ||
			!strings.Contains(d.Error, "flaky fails") {
			t.Errorf("dead letter %+v", d)
		}
		// At least once, with the same idempotency key on every attempt.
		if n := strings.Count(string(logs), "attempt rid="+d.ID+"\n"); n != 3 {
			t.Errorf("event %s seen %d times by the handler:\n%s", d.ID, n, logs)
		}
	}
}

// TestLocalQueueRetryPolicy: what is retried, and the backoff's growth.
func TestLocalQueueRetryPolicy(t *testing.T) {
	p := RetryPolicy{Attempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}
	for _, c := range []struct {
		res  *Result
		err  error
		want bool
	}{
		{&Result{}, nil, false},
		{&Result{FunctionError: true}, nil, true},
		{nil, &TimeoutError{Timeout: time.Second}, true},
		{nil, fmt.Errorf("x: %w", ErrFunctionCrashed), true},
		{nil, fmt.Errorf("x: %w", ErrOverloaded), true},
		{nil, fmt.Errorf("x: %w", ErrNotFound), false},
		{nil, fmt.Errorf("x: %w", ErrTooLarge), false},
		{nil, fmt.Errorf("x: %w", ErrCallDepth), false},
	} {
		if got := p.retryable(c.res, c.err); got != c.want {
			t.Errorf("retryable(%+v, %v) = %v", c.res, c.err, got)
		}
	}
	skip := p
	skip.SkipFunctionErrors = true
	if skip.retryable(&Result{FunctionError: true}, nil) {
		t.Error("function error retried despite SkipFunctionErrors")
	}
	for next, want := range map[int]time.Duration{2: 100 * time.Millisecond, 3: 200 * time.Millisecond, 4: 300 * time.Millisecond, 9: 300 * time.Millisecond} {
		if d := p.backoff(next); d > want || d < want*4/5 {
			t.Errorf("backoff(%d) = %v, want about %v", next, d, want)
		}
	}
	l := &deadLetterList{max: 2}
	for i := range 3 {
		l.add(DeadLetter{ID: fmt.Sprint(i)})
	}
	if got := l.snapshot(); len(got) != 2 || got[0].ID != "1" || got[1].ID != "2" {
		t.Errorf("bounded dead letters: %+v", got)
	}
}

// BenchmarkChainLocal: a warm function→function call, timed inside the
// caller around sockfaas.invoke.
func BenchmarkChainLocal(b *testing.B) {
	iv := newTestInvoker(b, WithPauseAfter(-1))
	deployHandler(b, iv, "caller", callerHandler, "timeout_sec: 60\n")
	deployHandler(b, iv, "echo", echoHandler, "")
	callVia(b, iv, "caller", map[string]any{"to": "echo"}) // both warm
	var lat []int64
	b.ResetTimer()
	for left := b.N; left > 0; {
		n := min(left, 2000)
		left -= n
		res := invoke(b, iv, "caller", fmt.Sprintf(`{"op": "bench", "to": "echo", "n": %d}`, n))
		var chunk []int64
		if err := json.Unmarshal(res.Payload, &chunk); err != nil {
			b.Fatalf("%s: %v", res.Payload, err)
		}
		lat = append(lat, chunk...)
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)]) / 1e3 }
	b.ReportMetric(pct(0.5), "p50-us")
	b.ReportMetric(pct(0.99), "p99-us")
}

// fakeUpstream serves every function as "upstream" (and delivers
// nothing, as NoUpstream).
type fakeUpstream struct {
	NoUpstream
	got chan *Trace
}

func (u fakeUpstream) Invoke(ctx context.Context, name string, payload []byte, tr *Trace) (*Result, error) {
	u.got <- tr
	return &Result{Payload: []byte(`"from upstream"`)}, nil
}

func (u fakeUpstream) InvokeAsync(ctx context.Context, ev Event) error {
	u.got <- ev.Trace
	return nil
}

// TestLocalCallUpstream: a callee not deployed here goes to the upstream,
// with the call's trace.
func TestLocalCallUpstream(t *testing.T) {
	up := fakeUpstream{got: make(chan *Trace, 2)}
	iv := newTestInvoker(t, WithUpstream(up))
	deployHandler(t, iv, "caller", callerHandler, "")
	out := callVia(t, iv, "caller", map[string]any{"to": "elsewhere"})
	if out["result"] != "from upstream" {
		t.Errorf("upstream call: %v", out)
	}
	tr := <-up.got
	if tr.Caller != "caller@1" || tr.Depth != 2 || tr.String() != "caller → elsewhere" || time.Until(tr.Deadline) > 3*time.Second {
		t.Errorf("trace: %+v", tr)
	}
	out = callVia(t, iv, "caller", map[string]any{"op": "async", "to": "elsewhere"})
	if id, _ := out["id"].(string); id == "" {
		t.Errorf("upstream event: %v", out)
	}
	if tr := <-up.got; !tr.Deadline.IsZero() {
		t.Errorf("an event inherited a deadline: %+v", tr)
	}
}

// TestLocalCallFresh: the SDK works in instances started without a
// zygote too.
func TestLocalCallFresh(t *testing.T) {
	iv := newTestInvoker(t)
	iv.noZygote.Store(true)
	deployHandler(t, iv, "caller", callerHandler, "")
	deployHandler(t, iv, "echo", echoHandler, "")
	out := callVia(t, iv, "caller", map[string]any{"to": "echo", "event": map[string]any{"x": 1}})
	if r, _ := out["result"].(map[string]any); r == nil || fmt.Sprint(r["echo"]) != "map[x:1]" {
		t.Errorf("call between fresh instances: %v", out)
	}
	for _, is := range iv.Status().Instances {
		if is.Pid == 0 {
			t.Errorf("instance without a process: %+v", is)
		}
	}
}
