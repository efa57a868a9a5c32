package zygote

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const hostPython = "/usr/bin/python3"

func requirePython(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(hostPython); err != nil {
		tb.Skipf("skipping: %s not found", hostPython)
	}
}

// testRuntime writes the embedded runtime, as the invoker does.
func testRuntime(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := WriteRuntime(dir); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// socketPath returns a socket path that fits in sun_path.
func socketPath(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "i.sock")
	if len(p) < 100 {
		return p
	}
	dir, err := os.MkdirTemp("", "sfz")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "i.sock")
}

func functionDir(tb testing.TB, name string) string {
	tb.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "functions", name))
	if err != nil {
		tb.Fatal(err)
	}
	return dir
}

type instanceOpts struct {
	style, handler string
	extra          []string
	noReadyFD      bool
}

type testInstance struct {
	cmd    *exec.Cmd
	socket string
	stdout string // file the instance's fd 1 writes to
	stderr string
	ready  string // what came on the ready fd
	done   chan error
}

// startInstance runs instance.py for one of testdata/functions as a plain
// host process and waits for its ready line (the line itself is returned,
// so startup failures can be tested too).
func startInstance(tb testing.TB, fn string, o instanceOpts) *testInstance {
	tb.Helper()
	requirePython(tb)
	rt := testRuntime(tb)
	tmp := tb.TempDir()
	inst := &testInstance{
		socket: socketPath(tb),
		stdout: filepath.Join(tmp, "stdout"),
		stderr: filepath.Join(tmp, "stderr"),
		done:   make(chan error, 1),
	}
	args := []string{filepath.Join(rt, "instance.py"),
		"--socket", inst.socket, "--dir", functionDir(tb, fn), "--name", fn, "--memory-mb", "256"}
	if o.style != "" {
		args = append(args, "--style", o.style)
	}
	if o.handler != "" {
		args = append(args, "--handler", o.handler)
	}
	args = append(args, o.extra...)
	cmd := exec.Command(hostPython, args...)
	// Keep testdata free of __pycache__.
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	stdout, err := os.Create(inst.stdout)
	if err != nil {
		tb.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(inst.stderr)
	if err != nil {
		tb.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	var r, w *os.File
	if !o.noReadyFD {
		if r, w, err = os.Pipe(); err != nil {
			tb.Fatal(err)
		}
		defer r.Close()
		cmd.ExtraFiles = []*os.File{w}
		cmd.Args = append(cmd.Args, "--ready-fd", "3")
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	inst.cmd = cmd
	go func() { inst.done <- cmd.Wait() }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-inst.done:
		case <-time.After(5 * time.Second):
			tb.Errorf("instance %d did not exit after SIGKILL", cmd.Process.Pid)
		}
	})
	if o.noReadyFD {
		return inst
	}
	w.Close()
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && line == "" {
		tb.Fatalf("no ready line from instance: %v; stderr: %s", err, readFile(tb, inst.stderr))
	}
	inst.ready = strings.TrimSpace(line)
	return inst
}

func mustStart(tb testing.TB, fn string, o instanceOpts) *testInstance {
	tb.Helper()
	inst := startInstance(tb, fn, o)
	if inst.ready != "ready" {
		tb.Fatalf("instance %s: ready fd said %q; stderr: %s", fn, inst.ready, readFile(tb, inst.stderr))
	}
	return inst
}

func (inst *testInstance) waitExit(tb testing.TB, within time.Duration) int {
	tb.Helper()
	select {
	case err := <-inst.done:
		inst.done <- err // for Cleanup
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			tb.Fatal(err)
		}
		return 0
	case <-time.After(within):
		tb.Fatalf("instance did not exit within %v", within)
		return -1
	}
}

func readFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func dialT(tb testing.TB, socket string) *Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, socket)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func invokeT(tb testing.TB, c *Client, req InvokeRequest) *InvokeResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Invoke(ctx, req)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

type lambdaError struct {
	ErrorMessage string   `json:"errorMessage"`
	ErrorType    string   `json:"errorType"`
	StackTrace   []string `json:"stackTrace"`
}

func decode[T any](tb testing.TB, b []byte) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatalf("decode %q: %v", b, err)
	}
	return v
}

func TestInstanceLambdaStyle(t *testing.T) {
	inst := mustStart(t, "hello", instanceOpts{})
	c := dialT(t, inst.socket)

	res := invokeT(t, c, InvokeRequest{Payload: []byte(`{"name":"bob"}`)})
	if res.Status != 200 || res.FunctionError || string(res.Payload) != `{"hello": "bob"}` {
		t.Fatalf("got %d %v %s", res.Status, res.FunctionError, res.Payload)
	}
	// An empty payload is {}, as with Lambda.
	res = invokeT(t, c, InvokeRequest{})
	if string(res.Payload) != `{"hello": "world"}` {
		t.Fatalf("empty payload: got %s", res.Payload)
	}
	// Handler stdout goes to the process's fd 1, flushed per invocation.
	if out := readFile(t, inst.stdout); out != "hello called for bob\nhello called for world\n" {
		t.Fatalf("stdout file holds %q", out)
	}
}

func TestInstanceOpenLambdaStyle(t *testing.T) {
	inst := mustStart(t, "openlambda", instanceOpts{style: "openlambda"})
	c := dialT(t, inst.socket)
	res := invokeT(t, c, InvokeRequest{Payload: []byte(`[1, "two", {"three": 3}]`)})
	got := decode[map[string]any](t, res.Payload)
	if got["style"] != "openlambda" || fmt.Sprint(got["echo"]) != "[1 two map[three:3]]" {
		t.Fatalf("got %s", res.Payload)
	}
}

func TestInstanceNamedHandler(t *testing.T) {
	// Any module.func, here a sibling module's function: word(name) returns
	// name, so the "event" comes back as the result.
	inst := mustStart(t, "hello", instanceOpts{style: "openlambda", handler: "greeting.word"})
	c := dialT(t, inst.socket)
	if res := invokeT(t, c, InvokeRequest{Payload: []byte(`"x"`)}); string(res.Payload) != `"x"` {
		t.Fatalf("got %s", res.Payload)
	}
}

func TestInstanceNumpy(t *testing.T) {
	requirePython(t)
	if err := exec.Command(hostPython, "-c", "import numpy").Run(); err != nil {
		t.Skip("skipping: numpy is not installed for", hostPython)
	}
	inst := mustStart(t, "numpy", instanceOpts{})
	c := dialT(t, inst.socket)
	res := invokeT(t, c, InvokeRequest{Payload: []byte(`{"values": [1, 2, 3, 4000000000]}`)})
	if string(res.Payload) != `{"sum": 4000000006}` {
		t.Fatalf("got %s", res.Payload)
	}
}

func TestInstanceHandlerError(t *testing.T) {
	inst := mustStart(t, "raises", instanceOpts{})
	c := dialT(t, inst.socket)

	res := invokeT(t, c, InvokeRequest{Payload: []byte(`{"v": 42}`)})
	if res.Status != 200 || !res.FunctionError {
		t.Fatalf("got status %d, function error %v", res.Status, res.FunctionError)
	}
	e := decode[lambdaError](t, res.Payload)
	if e.ErrorType != "ValueError" || e.ErrorMessage != "bad value: 42" {
		t.Fatalf("got %+v", e)
	}
	// The handler's frames, innermost last, without the server's own.
	if len(e.StackTrace) != 2 || !strings.Contains(e.StackTrace[0], "in lambda_handler") ||
		!strings.Contains(e.StackTrace[1], "in check") || !strings.Contains(e.StackTrace[1], `raise ValueError`) {
		t.Fatalf("stack trace %q", e.StackTrace)
	}
	// Exactly the Lambda error object's keys.
	keys := decode[map[string]json.RawMessage](t, res.Payload)
	if len(keys) != 3 {
		t.Fatalf("error object has keys %v", keys)
	}

	// A return value json cannot encode is an error too.
	res = invokeT(t, c, InvokeRequest{Payload: []byte(`{"unserializable": true}`)})
	e = decode[lambdaError](t, res.Payload)
	if !res.FunctionError || e.ErrorType != "Runtime.MarshalError" || !strings.Contains(e.ErrorMessage, "set") {
		t.Fatalf("got %v %+v", res.FunctionError, e)
	}
}

func TestInstanceMalformedJSON(t *testing.T) {
	inst := mustStart(t, "hello", instanceOpts{})
	c := dialT(t, inst.socket)
	for _, body := range []string{`{"name":`, `not json`, "\xff\xfe\x00"} {
		res := invokeT(t, c, InvokeRequest{Payload: []byte(body)})
		e := decode[lambdaError](t, res.Payload)
		if res.Status != 400 || e.ErrorType != "InvalidRequestContentException" || res.FunctionError {
			t.Fatalf("%q: got %d %+v", body, res.Status, e)
		}
	}
	// The connection is still good.
	if res := invokeT(t, c, InvokeRequest{Payload: []byte(`{}`)}); res.Status != 200 {
		t.Fatalf("after 400: status %d", res.Status)
	}
}

func TestInstanceOversizeBody(t *testing.T) {
	inst := mustStart(t, "openlambda", instanceOpts{style: "openlambda"})
	c := dialT(t, inst.socket)

	// Just under the default 6 MiB limit: served, through the writev path.
	under := append(append([]byte(`"`), bytes.Repeat([]byte("a"), 6<<20-2)...), '"')
	res := invokeT(t, c, InvokeRequest{Payload: under})
	if res.Status != 200 || len(res.Payload) < 6<<20 {
		t.Fatalf("at the limit: status %d, %d bytes", res.Status, len(res.Payload))
	}
	over := append(append([]byte(`"`), bytes.Repeat([]byte("a"), 6<<20)...), '"')
	res = invokeT(t, c, InvokeRequest{Payload: over})
	e := decode[lambdaError](t, res.Payload)
	if res.Status != 413 || e.ErrorType != "RequestEntityTooLargeException" {
		t.Fatalf("over the limit: got %d %+v", res.Status, e)
	}
	// The rejected body was discarded, not stored, and the connection goes on.
	if res := invokeT(t, c, InvokeRequest{Payload: []byte(`1`)}); res.Status != 200 {
		t.Fatalf("after 413: status %d", res.Status)
	}
}

func TestInstanceMaxBodyFlag(t *testing.T) {
	inst := mustStart(t, "openlambda", instanceOpts{style: "openlambda", extra: []string{"--max-body", "100"}})
	c := dialT(t, inst.socket)
	if res := invokeT(t, c, InvokeRequest{Payload: []byte(`"` + strings.Repeat("x", 100) + `"`)}); res.Status != 413 {
		t.Fatalf("status %d", res.Status)
	}
	if res := invokeT(t, c, InvokeRequest{Payload: []byte(`"x"`)}); res.Status != 200 {
		t.Fatalf("status %d", res.Status)
	}
}

// rawHTTP sends raw request bytes on a fresh connection and parses what
// comes back.
func rawHTTP(t *testing.T, socket, request string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%q: %v", request, err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	return resp, body.String()
}

func TestInstanceHTTPProtocol(t *testing.T) {
	inst := mustStart(t, "hello", instanceOpts{})
	for _, tc := range []struct {
		name, req  string
		status     int
		body       string // substring
		closeAfter bool
	}{
		{"healthz", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, "ok", false},
		{"not found", "GET /nope HTTP/1.1\r\n\r\n", 404, `"errorType": "NotFound"`, false},
		{"wrong method", "GET /invoke HTTP/1.1\r\n\r\n", 405, "POST", false},
		{"query string", "POST /invoke?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 200, "world", false},
		{"header case", "POST /invoke HTTP/1.1\r\ncOnTeNt-LeNgTh: 15\r\n\r\n{\"name\": \"ann\"}", 200, "ann", false},
		{"chunked", "POST /invoke HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411, "Content-Length", true},
		{"no length", "POST /invoke HTTP/1.1\r\n\r\n", 411, "Content-Length", true},
		{"bad length", "POST /invoke HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length", true},
		{"conflicting lengths", "POST /invoke HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "Content-Length", true},
		{"bad request line", "HELLO\r\n\r\n", 400, "request line", true},
		{"bad header", "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400, "header", true},
		{"http/2", "GET /healthz HTTP/2.0\r\n\r\n", 505, "HTTP/2.0", true},
		{"head too big", "GET /healthz HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 40<<10) + "\r\n\r\n", 431, "head", true},
		{"http/1.0", "POST /invoke HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", 200, "world", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawHTTP(t, inst.socket, tc.req)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("got %d %q, want %d containing %q", resp.StatusCode, body, tc.status, tc.body)
			}
			if resp.Close != tc.closeAfter {
				t.Fatalf("close after response: %v, want %v", resp.Close, tc.closeAfter)
			}
		})
	}
	// Expect: 100-continue gets its interim response; pipelined requests
	// are answered in order.
	conn, err := net.Dial("unix", inst.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	_, _ = conn.Write([]byte("POST /invoke HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"))
	if line, _ := br.ReadString('\n'); line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q", line)
	}
	_, _ = br.ReadString('\n')
	_, _ = conn.Write([]byte("{}GET /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"))
	for i, want := range []int{200, 200, 200} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != want {
			t.Fatalf("pipelined response %d: %v %v", i, resp, err)
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
	}
}

func TestInstanceContext(t *testing.T) {
	inst := mustStart(t, "context", instanceOpts{})
	c := dialT(t, inst.socket)
	deadline := time.Now().Add(3 * time.Second)
	res := invokeT(t, c, InvokeRequest{Payload: []byte(`{}`), RequestID: "req-123", Deadline: deadline})
	got := decode[map[string]any](t, res.Payload)
	want := map[string]any{
		"aws_request_id":       "req-123",
		"function_name":        "context",
		"function_version":     "$LATEST",
		"memory_limit_in_mb":   float64(256),
		"invoked_function_arn": "arn:aws:lambda:local:000000000000:function:context",
		"log_group_name":       "/aws/lambda/context",
		"env_function_name":    "context",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if rem := got["remaining_ms"].(float64); rem <= 2000 || rem > 3000 {
		t.Errorf("remaining_ms = %v with a deadline 3 s out", rem)
	}
	if s, _ := got["log_stream_name"].(string); !strings.Contains(s, "[$LATEST]") {
		t.Errorf("log_stream_name = %q", s)
	}

	// No request id: a UUID is made up; no deadline: a long one.
	res, err := c.Invoke(context.Background(), InvokeRequest{Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	got = decode[map[string]any](t, res.Payload)
	uuid4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	if id, _ := got["aws_request_id"].(string); !uuid4.MatchString(id) {
		t.Errorf("aws_request_id = %q, want a UUID4", id)
	}
	if rem := got["remaining_ms"].(float64); rem < 60_000 {
		t.Errorf("remaining_ms = %v without a deadline", rem)
	}

	// The ctx deadline stands in for a missing request deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err = c.Invoke(ctx, InvokeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if rem := decode[map[string]any](t, res.Payload)["remaining_ms"].(float64); rem > 2000 || rem < 1000 {
		t.Errorf("remaining_ms = %v under a 2 s ctx", rem)
	}

	if _, err := c.Invoke(context.Background(), InvokeRequest{RequestID: "a\r\nX-Evil: 1"}); err == nil {
		t.Error("a request id with CRLF was sent")
	}
}

func TestInvokeKeepAlive(t *testing.T) {
	inst := mustStart(t, "hello", instanceOpts{})
	c := dialT(t, inst.socket)
	conn := c.conn
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("n%d", i)
		res := invokeT(t, c, InvokeRequest{Payload: []byte(`{"name":"` + name + `"}`), RequestID: name})
		if string(res.Payload) != `{"hello": "`+name+`"}` {
			t.Fatalf("invoke %d: %s", i, res.Payload)
		}
	}
	if c.conn != conn {
		t.Fatal("the client reconnected")
	}
	if n := strings.Count(readFile(t, inst.stdout), "\n"); n != 1000 {
		t.Fatalf("%d stdout lines, want 1000", n)
	}
}

func TestInvokeTimeoutClosesConnection(t *testing.T) {
	inst := mustStart(t, "slow", instanceOpts{})
	c := dialT(t, inst.socket)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Invoke(ctx, InvokeRequest{Payload: []byte(`{"ms": 1500}`)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("timeout took %v", d)
	}
	if c.conn != nil {
		t.Fatal("connection still open after a timeout")
	}

	// Cancellation without a deadline unblocks the read too.
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel2)
	c2 := dialT(t, inst.socket)
	if _, err := c2.Invoke(ctx2, InvokeRequest{Payload: []byte(`{"ms": 1}`)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want Canceled", err)
	}

	// The instance finishes the slow call, notices the client has gone, and
	// serves the next connection.
	c3 := dialT(t, inst.socket)
	res := invokeT(t, c3, InvokeRequest{Payload: []byte(`{"ms": 1}`)})
	if string(res.Payload) != `{"slept_ms": 1}` {
		t.Fatalf("got %s", res.Payload)
	}
	// The first client dials again when used again.
	res = invokeT(t, c, InvokeRequest{Payload: []byte(`{"ms": 2}`)})
	if string(res.Payload) != `{"slept_ms": 2}` {
		t.Fatalf("got %s", res.Payload)
	}
	_ = c.Close()
	if _, err := c.Invoke(context.Background(), InvokeRequest{}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestInvokeInstanceDies(t *testing.T) {
	inst := mustStart(t, "slow", instanceOpts{})
	c := dialT(t, inst.socket)
	time.AfterFunc(100*time.Millisecond, func() { _ = inst.cmd.Process.Kill() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Invoke(ctx, InvokeRequest{Payload: []byte(`{"ms": 3000}`)})
	if !errors.Is(err, ErrInstanceClosed) {
		t.Fatalf("got %v, want ErrInstanceClosed", err)
	}
}

func TestInstanceStartupFailures(t *testing.T) {
	for _, tc := range []struct {
		name, fn string
		o        instanceOpts
		want     string
	}{
		{"syntax error", "bad-syntax", instanceOpts{}, "syntax error in"},
		{"missing function", "missing-handler", instanceOpts{}, "handler function 'lambda_handler' not found"},
		{"missing module", "hello", instanceOpts{handler: "nosuch.handler"}, "handler module 'nosuch' not found"},
		{"openlambda without f.py", "hello", instanceOpts{style: "openlambda"}, "handler module 'f' not found"},
		{"bad handler name", "hello", instanceOpts{handler: "nodot"}, "want MODULE.FUNCTION"},
		{"bad style", "hello", instanceOpts{style: "aws"}, "unknown style"},
		{"bad socket dir", "hello", instanceOpts{extra: []string{"--socket", "/nonexistent/dir/i.sock"}}, "listen on /nonexistent/dir/i.sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			inst := startInstance(t, tc.fn, tc.o)
			if !strings.HasPrefix(inst.ready, "error: ") || !strings.Contains(inst.ready, tc.want) {
				t.Fatalf("ready fd said %q, want an error containing %q", inst.ready, tc.want)
			}
			if code := inst.waitExit(t, 5*time.Second); code != 3 {
				t.Fatalf("exit status %d, want 3", code)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("failing took %v", d)
			}
		})
	}
	// Without a ready fd the message goes to stderr.
	inst := startInstance(t, "bad-syntax", instanceOpts{noReadyFD: true})
	if code := inst.waitExit(t, 5*time.Second); code != 3 {
		t.Fatalf("exit status %d, want 3", code)
	}
	if s := readFile(t, inst.stderr); !strings.HasPrefix(s, "error: syntax error in") {
		t.Fatalf("stderr: %q", s)
	}
}

func TestInstanceSocketInUse(t *testing.T) {
	first := mustStart(t, "hello", instanceOpts{})
	second := startInstance(t, "hello", instanceOpts{extra: []string{"--socket", first.socket}})
	if !strings.Contains(second.ready, "in use") {
		t.Fatalf("second instance on the same socket said %q", second.ready)
	}
	c := dialT(t, first.socket)
	invokeT(t, c, InvokeRequest{})
}

func TestInstanceSIGTERM(t *testing.T) {
	inst := mustStart(t, "hello", instanceOpts{})
	c := dialT(t, inst.socket)
	invokeT(t, c, InvokeRequest{Payload: []byte(`{"name": "before"}`)})
	start := time.Now()
	if err := inst.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := inst.waitExit(t, 2*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
	t.Logf("exited %v after SIGTERM", time.Since(start))
	if _, err := os.Stat(inst.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if out := readFile(t, inst.stdout); out != "hello called for before\n" {
		t.Fatalf("stdout %q", out)
	}
}

func TestInvokeWaitReady(t *testing.T) {
	inst := startInstance(t, "hello", instanceOpts{noReadyFD: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := WaitReady(ctx, inst.socket); err != nil {
		t.Fatal(err)
	}
	t.Logf("fresh hello instance ready after %v", time.Since(start))
	c := dialT(t, inst.socket)
	invokeT(t, c, InvokeRequest{})

	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if err := WaitReady(ctx2, filepath.Join(t.TempDir(), "none.sock")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
}

// TestInstanceServeAPI drives the importable entry points the way a zygote's
// child does: import instance first, then load() and serve().
func TestInstanceServeAPI(t *testing.T) {
	requirePython(t)
	rt := testRuntime(t)
	sock := socketPath(t)
	script := `
import json, sys
sys.path.insert(0, sys.argv[1])
import instance
cfg = {"socket": sys.argv[2], "dir": sys.argv[3], "handler": None, "style": "lambda",
       "name": "api", "memory_mb": 64}
try:
    instance.load(dict(cfg, handler="lambda_function.nope"))
except instance.StartupError as e:
    print("load error:", e, e.kind, flush=True)
fn = instance.load(cfg)
print("loaded:", fn.__name__, flush=True)
instance.serve(cfg, ready=lambda: print("listening", flush=True))
`
	cmd := exec.Command(hostPython, "-c", script, rt, sock, functionDir(t, "hello"))
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	br := bufio.NewReader(out)
	var lines []string
	for len(lines) < 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v; stderr: %s", lines, err, stderr.String())
		}
		lines = append(lines, strings.TrimSpace(line))
	}
	want := []string{
		"load error: handler function 'nope' not found in module 'lambda_function' Runtime.HandlerNotFound",
		"loaded: lambda_handler",
		"listening",
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("got %q, want %q", lines, want)
	}
	c := dialT(t, sock)
	if res := invokeT(t, c, InvokeRequest{Payload: []byte(`{"name": "api"}`)}); string(res.Payload) != `{"hello": "api"}` {
		t.Fatalf("got %s", res.Payload)
	}
}

// BenchmarkInvokeWarm measures the warm path end to end: the Go client
// writes a request on its persistent connection, instance.py runs the hello
// handler (which prints a line to its stdout file) and answers. "timeout"
// is what an invoker does: a ctx with a deadline per call (connection
// deadline, cancel hook, X-Deadline-Ms).
func BenchmarkInvokeWarm(b *testing.B) {
	inst := mustStart(b, "hello", instanceOpts{})
	c := dialT(b, inst.socket)
	req := InvokeRequest{Payload: []byte(`{"name":"bench"}`), RequestID: "bench"}
	for i := 0; i < 200; i++ { // warm up both sides
		if _, err := c.Invoke(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
	for _, withTimeout := range []bool{false, true} {
		name := "ctx=background"
		if withTimeout {
			name = "ctx=timeout"
		}
		b.Run(name, func(b *testing.B) {
			durs := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if withTimeout {
					ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
				}
				res, err := c.Invoke(ctx, req)
				cancel()
				durs = append(durs, time.Since(t0))
				if err != nil || res.Status != 200 {
					b.Fatal(res, err)
				}
			}
			b.StopTimer()
			slices.Sort(durs)
			pct := func(p float64) float64 {
				return float64(durs[int(p*float64(len(durs)-1))].Nanoseconds()) / 1e3
			}
			b.ReportMetric(pct(0.50), "p50-us")
			b.ReportMetric(pct(0.99), "p99-us")
		})
	}
}
