package invoker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/sockfaas/sockfaas/internal/testutil"
)

// fakeService is the Service the HTTP tests drive: functions live in a
// map, deploys unpack the archive for real (so that upload limits are the
// real ones), and invocations echo the event unless a test sets invoke.
type fakeService struct {
	codeDir string // where deploys unpack; "" refuses deploys

	mu      sync.Mutex
	funcs   map[string]*Function
	async   map[string]*fakeAsync
	nextID  int
	logs    map[string][]byte
	status  Status
	removed []string

	// invoke, if set, replaces the echo; set it before serving.
	invoke func(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error)
	// asyncCalls counts InvokeAsync calls that were queued.
	asyncCalls atomic.Int64
}

type fakeAsync struct {
	name    string
	payload []byte
	opts    InvokeOptions
	res     *Result
	err     error
	done    bool
}

var _ Service = (*fakeService)(nil)

func newFakeService(codeDir string, names ...string) *fakeService {
	s := &fakeService{
		codeDir: codeDir,
		funcs:   map[string]*Function{},
		async:   map[string]*fakeAsync{},
		logs:    map[string][]byte{},
	}
	for _, n := range names {
		s.funcs[n] = &Function{
			Name: n, Version: 1,
			Manifest: Manifest{Requirements: []string{"numpy>=1.20"}}.WithDefaults(),
			Imports:  []string{"numpy"},
			Created:  time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
			Digest:   "sha256:" + strings.Repeat("ab", 32),
		}
	}
	return s
}

func (s *fakeService) Deploy(ctx context.Context, name string, src Source) (*Function, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if s.codeDir == "" {
		return nil, errors.New("fake: no code directory")
	}
	dir, err := os.MkdirTemp(s.codeDir, name+"-")
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if err := src.stage(ctx, root, limits{maxFiles: 100, maxBytes: 200 << 20}); err != nil {
		return nil, fmt.Errorf("deploy %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := 1
	if old, ok := s.funcs[name]; ok {
		v = old.Version + 1
	}
	fn := &Function{Name: name, Version: v, Dir: dir, Manifest: Manifest{}.WithDefaults(), Created: time.Now().UTC(), Digest: "sha256:00"}
	s.funcs[name] = fn
	return fn.clone(), nil
}

func (s *fakeService) Functions() []*Function {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Function
	for _, f := range s.funcs {
		out = append(out, f.clone())
	}
	return out
}

func (s *fakeService) Function(name string) (*Function, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.funcs[name]
	if !ok {
		return nil, fmt.Errorf("function %q: %w", name, ErrNotFound)
	}
	return f.clone(), nil
}

func (s *fakeService) Remove(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.funcs[name]; !ok {
		return fmt.Errorf("remove %q: %w", name, ErrNotFound)
	}
	delete(s.funcs, name)
	s.removed = append(s.removed, name)
	return nil
}

func (s *fakeService) Invoke(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error) {
	if s.invoke != nil {
		return s.invoke(ctx, name, payload, o)
	}
	if _, err := s.Function(name); err != nil {
		return nil, err
	}
	return &Result{RequestID: o.RequestID, Payload: payload, Start: "warm", Duration: 250 * time.Microsecond}, nil
}

func (s *fakeService) InvokeAsync(ctx context.Context, name string, payload []byte, o InvokeOptions) (string, error) {
	if _, err := s.Function(name); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	id := fmt.Sprintf("async-%d", s.nextID)
	s.async[id] = &fakeAsync{name: name, payload: payload, opts: o}
	s.asyncCalls.Add(1)
	return id, nil
}

// finish completes a queued invocation.
func (s *fakeService) finish(id string, res *Result, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.async[id]
	a.res, a.err, a.done = res, err, true
}

func (s *fakeService) AsyncResult(id string) (*Result, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.async[id]
	switch {
	case !ok:
		return nil, false, fmt.Errorf("invocation %q: %w", id, ErrNotFound)
	case !a.done:
		return nil, false, nil
	}
	return a.res, true, a.err
}

func (s *fakeService) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Functions = len(s.funcs)
	return st
}

func (s *fakeService) DeadLetters() []DeadLetter {
	return []DeadLetter{{ID: "ev1", Function: "hello", Payload: []byte(`{"a":1}`), Attempts: 3, Error: "task timed out"}}
}

// TestDeadLettersRoute: GET /v1/dead-letters lists what the service holds.
func TestDeadLettersRoute(t *testing.T) {
	h := NewHandler(newFakeService("", "hello"))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/dead-letters", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"ev1"`) || !strings.Contains(rec.Body.String(), `"dead_letters"`) {
		t.Fatalf("dead letters: %d %s", rec.Code, rec.Body.String())
	}
}

func (s *fakeService) Logs(name string, max int) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.funcs[name]; !ok {
		return nil, fmt.Errorf("logs %q: %w", name, ErrNotFound)
	}
	out := s.logs[name]
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out, nil
}

// call runs one request through h without a network.
func call(t *testing.T, h http.Handler, method, target string, body io.Reader, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", rec.Body.String(), err)
	}
	return v
}

// wantError checks a native error response.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, typ string) HTTPError {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	e := decode[HTTPError](t, rec)
	if e.Type != typ || e.Message == "" {
		t.Errorf("error %+v, want type %s and a message", e, typ)
	}
	return e
}

// targz makes a .tar.gz of files.
func targz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestHTTPHealthz(t *testing.T) {
	h := NewHandler(newFakeService(""), WithToken("s3cret"))
	rec := call(t, h, "GET", "/healthz", nil, nil)
	if rec.Code != 200 || rec.Body.String() != "ok\n" {
		t.Fatalf("healthz: %d %q", rec.Code, rec.Body)
	}
}

func TestHTTPAuth(t *testing.T) {
	h := NewHandler(newFakeService("", "hello"), WithToken("s3cret"))
	for _, tc := range []struct {
		name, path, auth string
		status           int
	}{
		{"none", "/v1/functions", "", 401},
		{"wrong", "/v1/functions", "Bearer nope", 401},
		{"prefix of the token", "/v1/functions", "Bearer s3cre", 401},
		{"basic scheme", "/v1/functions", "Basic czNjcmV0", 401},
		{"right", "/v1/functions", "Bearer s3cret", 200},
		{"scheme is case-insensitive", "/v1/functions", "bearer s3cret", 200},
		{"metrics need it too", "/metrics", "", 401},
		{"metrics", "/metrics", "Bearer s3cret", 200},
		{"unknown route is 401 first", "/nope", "", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := call(t, h, "GET", tc.path, nil, map[string]string{"Authorization": tc.auth})
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d", rec.Code, tc.status)
			}
			if tc.status == 401 {
				if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer ") {
					t.Errorf("WWW-Authenticate %q", got)
				}
				wantError(t, rec, 401, "Unauthorized")
			}
		})
	}
	// The Lambda API answers in its own shape.
	rec := call(t, h, "POST", "/2015-03-31/functions/hello/invocations", strings.NewReader("{}"), nil)
	if rec.Code != 401 || rec.Header().Get("x-amzn-ErrorType") == "" {
		t.Fatalf("lambda without token: %d %v", rec.Code, rec.Header())
	}
}

func TestHTTPFunctions(t *testing.T) {
	fs := newFakeService(t.TempDir(), "hello")
	h := NewHandler(fs)
	code := targz(t, map[string]string{"lambda_function.py": "def lambda_handler(e, c):\n    return e\n"})

	rec := call(t, h, "PUT", "/v1/functions/echo", bytes.NewReader(code), map[string]string{"Content-Type": "application/gzip"})
	if rec.Code != 201 {
		t.Fatalf("deploy: %d %s", rec.Code, rec.Body)
	}
	if loc := rec.Header().Get("Location"); loc != "/v1/functions/echo" {
		t.Errorf("Location %q", loc)
	}
	info := decode[FunctionInfo](t, rec)
	if info.Name != "echo" || info.Version != 1 || info.Handler != DefaultHandler || info.Runtime != RuntimePython3 ||
		info.Style != StyleLambda || info.MemoryMB != DefaultMemoryMB || info.TimeoutSec != DefaultTimeoutSec {
		t.Errorf("deployed %+v", info)
	}
	if !strings.Contains(rec.Body.String(), `"requirements":[]`) || strings.Contains(rec.Body.String(), `"dir"`) {
		t.Errorf("body %s: want requirements as [] and no server directory", rec.Body)
	}
	// A new version; octet-stream and no Content-Type are accepted too.
	rec = call(t, h, "PUT", "/v1/functions/echo", bytes.NewReader(code), map[string]string{"Content-Type": "application/octet-stream"})
	if rec.Code != 201 || decode[FunctionInfo](t, rec).Version != 2 {
		t.Fatalf("redeploy: %d %s", rec.Code, rec.Body)
	}
	rec = call(t, h, "PUT", "/v1/functions/echo", bytes.NewReader(code), nil)
	if rec.Code != 201 {
		t.Fatalf("deploy without Content-Type: %d %s", rec.Code, rec.Body)
	}

	wantError(t, call(t, h, "PUT", "/v1/functions/echo", bytes.NewReader(code), map[string]string{"Content-Type": "application/json"}), 415, "UnsupportedMediaType")
	wantError(t, call(t, h, "PUT", "/v1/functions/echo", strings.NewReader("not gzip"), nil), 400, "InvalidArgument")
	wantError(t, call(t, h, "PUT", "/v1/functions/bad.name", bytes.NewReader(code), nil), 400, "InvalidArgument")

	rec = call(t, h, "GET", "/v1/functions", nil, nil)
	list := decode[FunctionList](t, rec)
	if rec.Code != 200 || len(list.Functions) != 2 || list.Functions[0].Name != "echo" || list.Functions[1].Name != "hello" {
		t.Fatalf("list: %d %s", rec.Code, rec.Body)
	}
	rec = call(t, h, "GET", "/v1/functions/hello", nil, nil)
	if got := decode[FunctionInfo](t, rec); rec.Code != 200 || got.Name != "hello" || len(got.Requirements) != 1 || got.Imports[0] != "numpy" || got.Digest == "" || got.Created.IsZero() {
		t.Fatalf("get: %d %s", rec.Code, rec.Body)
	}
	wantError(t, call(t, h, "GET", "/v1/functions/nope", nil, nil), 404, "NotFound")

	rec = call(t, h, "DELETE", "/v1/functions/hello", nil, nil)
	if rec.Code != 204 || rec.Body.Len() != 0 {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	wantError(t, call(t, h, "DELETE", "/v1/functions/hello", nil, nil), 404, "NotFound")
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// slowArchive streams a valid .tar.gz holding one file of size random
// (incompressible) bytes, a little at a time. Closing the returned reader
// stops the writer.
func slowArchive(size int64) *io.PipeReader {
	pr, pw := io.Pipe()
	go func() {
		zw, _ := gzip.NewWriterLevel(pw, gzip.NoCompression)
		tw := tar.NewWriter(zw)
		err := tw.WriteHeader(&tar.Header{Name: "big.bin", Mode: 0o644, Size: size, Typeflag: tar.TypeReg})
		rng := rand.New(rand.NewChaCha8([32]byte{1}))
		chunk := make([]byte, 64<<10)
		for written := int64(0); err == nil && written < size; written += int64(len(chunk)) {
			for i := 0; i < len(chunk); i += 8 {
				v := rng.Uint64()
				for j := range 8 {
					chunk[i+j] = byte(v >> (8 * j))
				}
			}
			_, err = tw.Write(chunk[:min(int64(len(chunk)), size-written)])
			if written%(4<<20) == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if err == nil {
			err = tw.Close()
		}
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

func TestHTTPUploadLimit(t *testing.T) {
	t.Run("Content-Length over the limit is refused unread", func(t *testing.T) {
		h := NewHandler(newFakeService(t.TempDir()))
		body := &countingReader{r: strings.NewReader(strings.Repeat("x", 1024))}
		req := httptest.NewRequest("PUT", "/v1/functions/big", body)
		req.ContentLength = 60 << 20
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		wantError(t, rec, 413, "TooLarge")
		if n := body.n.Load(); n != 0 {
			t.Errorf("read %d bytes of a body announced over the limit", n)
		}
	})

	t.Run("a slow 60 MiB body is cut at the default limit", func(t *testing.T) {
		h := NewHandler(newFakeService(t.TempDir()))
		src := slowArchive(60 << 20)
		defer src.Close()
		body := &countingReader{r: src}
		req := httptest.NewRequest("PUT", "/v1/functions/big", body)
		req.ContentLength = -1 // chunked: no length to refuse up front
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		wantError(t, rec, 413, "TooLarge")
		if n := body.n.Load(); n > DefaultMaxUpload+1 {
			t.Errorf("read %d bytes, more than the limit %d + 1", n, DefaultMaxUpload)
		} else if n < DefaultMaxUpload {
			t.Errorf("read only %d bytes: cut for another reason?", n)
		}
	})

	t.Run("over the network the server stops reading", func(t *testing.T) {
		const limit = 1 << 20
		srv := httptest.NewServer(NewHandler(newFakeService(t.TempDir()), WithMaxUpload(limit)))
		defer srv.Close()
		src := slowArchive(60 << 20)
		defer src.Close()
		body := &countingReader{r: src}
		req, _ := http.NewRequest("PUT", srv.URL+"/v1/functions/big", io.NopCloser(body))
		req.Header.Set("Content-Type", "application/gzip")
		res, err := srv.Client().Do(req)
		if err == nil {
			defer res.Body.Close()
			if res.StatusCode != 413 {
				t.Fatalf("status %d, want 413", res.StatusCode)
			}
		} else {
			// The server closed the connection while the client wrote.
			t.Logf("client: %v", err)
		}
		t.Logf("the client sent %d bytes", body.n.Load())
		if n := body.n.Load(); n > 20<<20 {
			t.Errorf("the client sent %d bytes before the server cut it off", n)
		}
	})

	t.Run("WithMaxUpload", func(t *testing.T) {
		h := NewHandler(newFakeService(t.TempDir()), WithMaxUpload(100))
		code := targz(t, map[string]string{"lambda_function.py": strings.Repeat("# padding\n", 100) + "def lambda_handler(e, c): pass\n"})
		wantError(t, call(t, h, "PUT", "/v1/functions/f", io.NopCloser(bytes.NewReader(code)), nil), 413, "TooLarge")
	})
}

func TestHTTPInvoke(t *testing.T) {
	fs := newFakeService("", "hello", "fails")
	fs.invoke = func(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error) {
		if name == "fails" {
			return &Result{RequestID: o.RequestID, Payload: []byte(`{"errorMessage":"boom","errorType":"ValueError"}`), FunctionError: true, Start: "cold", Duration: 3 * time.Millisecond}, nil
		}
		return &Result{RequestID: o.RequestID, Payload: payload, Start: "warm", Duration: 1234 * time.Microsecond}, nil
	}
	h := NewHandler(fs)

	rec := call(t, h, "POST", "/v1/functions/hello/invoke", strings.NewReader(`{"a":1}`), nil)
	if rec.Code != 200 || rec.Body.String() != `{"a":1}` {
		t.Fatalf("invoke: %d %s", rec.Code, rec.Body)
	}
	if got := rec.Header(); got.Get("X-Request-Id") == "" || got.Get("X-Sockfaas-Start") != "warm" ||
		got.Get("X-Sockfaas-Duration-Ms") != "1.234" || got.Get("X-Sockfaas-Function-Error") != "" || got.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", got)
	}

	rec = call(t, h, "POST", "/v1/functions/fails/invoke", strings.NewReader(`{}`), nil)
	if rec.Code != 200 || rec.Header().Get("X-Sockfaas-Function-Error") != "Unhandled" || !strings.Contains(rec.Body.String(), "boom") {
		t.Fatalf("function error: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}

	rec = call(t, h, "POST", "/v1/functions/hello/invoke", nil, map[string]string{"X-Request-Id": "my-id.1"})
	if rec.Code != 200 || rec.Body.String() != "{}" || rec.Header().Get("X-Request-Id") != "my-id.1" {
		t.Fatalf("empty event with a request ID: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	rec = call(t, h, "POST", "/v1/functions/hello/invoke", nil, map[string]string{"X-Request-Id": "bad id\x01"})
	if id := rec.Header().Get("X-Request-Id"); id == "" || strings.Contains(id, " ") {
		t.Errorf("a bad X-Request-Id was kept: %q", id)
	}

	wantError(t, call(t, h, "POST", "/v1/functions/hello/invoke", strings.NewReader(`{"a":`), nil), 400, "InvalidRequestContent")
	wantError(t, call(t, h, "POST", "/v1/functions/hello/invoke?async=maybe", nil, nil), 400, "InvalidArgument")
	big := `"` + strings.Repeat("x", maxSyncPayload) + `"`
	wantError(t, call(t, h, "POST", "/v1/functions/hello/invoke", strings.NewReader(big), nil), 413, "TooLarge")
	req := httptest.NewRequest("POST", "/v1/functions/hello/invoke", io.NopCloser(strings.NewReader(big)))
	req.ContentLength = -1
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	wantError(t, rec, 413, "TooLarge")
	exact := `"` + strings.Repeat("x", maxSyncPayload-2) + `"`
	if rec := call(t, h, "POST", "/v1/functions/hello/invoke", strings.NewReader(exact), nil); rec.Code != 200 {
		t.Errorf("an event of exactly the limit: %d", rec.Code)
	}
}

// TestHTTPErrorMapping checks describeError's table through each API.
func TestHTTPErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		typ        string
		lambdaType string
	}{
		{fmt.Errorf("invoke %q: %w", "f", ErrNotFound), 404, "NotFound", "ResourceNotFoundException"},
		{fmt.Errorf("invoke: %w: bad", ErrInvalid), 400, "InvalidArgument", "InvalidParameterValueException"},
		{fmt.Errorf("invoke: %w: big", ErrTooLarge), 413, "TooLarge", "RequestTooLargeException"},
		{fmt.Errorf("invoke: %w", ErrOverloaded), 429, "TooManyRequests", "TooManyRequestsException"},
		{fmt.Errorf("invoke: %w", ErrBusy), 409, "Conflict", "ResourceConflictException"},
		{fmt.Errorf("invoke: %w", ErrClosed), 503, "Unavailable", "ServiceException"},
		{errors.New("open /var/lib/sockfaas/secret: permission denied"), 500, "Internal", "ServiceException"},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			fs := newFakeService("", "f")
			fs.invoke = func(context.Context, string, []byte, InvokeOptions) (*Result, error) { return nil, tc.err }
			h := NewHandler(fs)
			for _, path := range []string{"/v1/functions/f/invoke", "/run/f"} {
				rec := call(t, h, "POST", path, strings.NewReader("{}"), nil)
				e := wantError(t, rec, tc.status, tc.typ)
				if tc.status == 500 && (strings.Contains(e.Message, "secret") || !strings.Contains(e.Message, rec.Header().Get("X-Request-Id"))) {
					t.Errorf("%s: internal error message %q: leaks, or lacks the request ID", path, e.Message)
				}
				if ra := rec.Header().Get("Retry-After"); (tc.status == 429 || tc.status == 503) != (ra == "1") {
					t.Errorf("%s: Retry-After %q", path, ra)
				}
			}
			rec := call(t, h, "POST", "/2015-03-31/functions/f/invocations", strings.NewReader("{}"), nil)
			if rec.Code != tc.status || rec.Header().Get("x-amzn-ErrorType") != tc.lambdaType {
				t.Fatalf("lambda: %d %v, want %d %s", rec.Code, rec.Header(), tc.status, tc.lambdaType)
			}
			le := decode[lambdaError](t, rec)
			if wantType := map[bool]string{true: "Service", false: "User"}[tc.status >= 500]; le.Type != wantType || le.Message == "" || strings.Contains(le.Message, "secret") {
				t.Errorf("lambda body %s", rec.Body)
			}
			if tc.status == 429 && (le.Reason != "ConcurrentInvocationLimitExceeded" || rec.Header().Get("Retry-After") != "1") {
				t.Errorf("lambda throttle: %v %s", rec.Header(), rec.Body)
			}
		})
	}
}

func TestHTTPTimeoutAndCrash(t *testing.T) {
	fs := newFakeService("", "slow", "crash")
	fs.invoke = func(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error) {
		if name == "slow" {
			return nil, fmt.Errorf("invoke %q: %w", name, ErrTimeout)
		}
		return nil, fmt.Errorf("invoke %q: %w (killed by signal 9): read unix /run/x.sock: reset", name, ErrFunctionCrashed)
	}
	h := NewHandler(fs)
	wantError(t, call(t, h, "POST", "/v1/functions/slow/invoke", nil, nil), 504, "Timeout")
	wantError(t, call(t, h, "POST", "/run/slow", nil, nil), 504, "Timeout")
	if e := wantError(t, call(t, h, "POST", "/v1/functions/crash/invoke", nil, nil), 502, "FunctionCrashed"); strings.Contains(e.Message, "sock") {
		t.Errorf("crash message leaks: %q", e.Message)
	}

	// Lambda answers both as function errors.
	for name, errorType := range map[string]string{"slow": "Sandbox.Timedout", "crash": "Runtime.ExitError"} {
		rec := call(t, h, "POST", "/2015-03-31/functions/"+name+"/invocations", nil, nil)
		if rec.Code != 200 || rec.Header().Get("X-Amz-Function-Error") != "Unhandled" {
			t.Fatalf("lambda %s: %d %v", name, rec.Code, rec.Header())
		}
		var body struct{ ErrorType, ErrorMessage string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.ErrorType != errorType || !strings.Contains(body.ErrorMessage, rec.Header().Get("x-amzn-RequestId")) {
			t.Errorf("lambda %s body %s", name, rec.Body)
		}
		if name == "slow" && !strings.Contains(body.ErrorMessage, "Task timed out after 3.00 seconds") {
			t.Errorf("timeout message %q", body.ErrorMessage)
		}
	}
}

func TestHTTPAsync(t *testing.T) {
	fs := newFakeService("", "hello")
	h := NewHandler(fs)
	rec := call(t, h, "POST", "/v1/functions/hello/invoke?async=true", strings.NewReader(`{"n":1}`), nil)
	if rec.Code != 202 {
		t.Fatalf("async: %d %s", rec.Code, rec.Body)
	}
	id := decode[AsyncAccepted](t, rec).ID
	if id == "" || rec.Header().Get("Location") != "/v1/invocations/"+id {
		t.Fatalf("async: id %q, Location %q", id, rec.Header().Get("Location"))
	}
	reqID := rec.Header().Get("X-Request-Id")
	if got := fs.async[id].opts.RequestID; got != reqID {
		t.Errorf("request ID passed %q, answered %q", got, reqID)
	}

	rec = call(t, h, "GET", "/v1/invocations/"+id, nil, nil)
	if rec.Code != 202 || decode[AsyncPending](t, rec).Status != "pending" {
		t.Fatalf("pending: %d %s", rec.Code, rec.Body)
	}
	fs.finish(id, &Result{RequestID: reqID, Payload: []byte(`{"n":2}`), Start: "paused", Duration: time.Millisecond}, nil)
	rec = call(t, h, "GET", "/v1/invocations/"+id, nil, nil)
	if rec.Code != 200 || rec.Body.String() != `{"n":2}` || rec.Header().Get("X-Request-Id") != reqID ||
		rec.Header().Get("X-Sockfaas-Start") != "paused" || rec.Header().Get("X-Sockfaas-Duration-Ms") != "1.000" {
		t.Fatalf("done: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}

	// A finished invocation that failed answers its error.
	rec = call(t, h, "POST", "/v1/functions/hello/invoke?async=1", nil, nil)
	id2 := decode[AsyncAccepted](t, rec).ID
	fs.finish(id2, nil, fmt.Errorf("invoke: %w", ErrTimeout))
	wantError(t, call(t, h, "GET", "/v1/invocations/"+id2, nil, nil), 504, "Timeout")

	wantError(t, call(t, h, "GET", "/v1/invocations/nope", nil, nil), 404, "NotFound")
	wantError(t, call(t, h, "POST", "/v1/functions/nope/invoke?async=true", nil, nil), 404, "NotFound")
	big := `"` + strings.Repeat("x", maxAsyncPayload) + `"`
	wantError(t, call(t, h, "POST", "/v1/functions/hello/invoke?async=true", strings.NewReader(big), nil), 413, "TooLarge")
	wantError(t, call(t, h, "POST", "/v1/functions/hello/invoke?async=true", strings.NewReader("nope"), nil), 400, "InvalidRequestContent")
}

func TestHTTPLogsAndStatus(t *testing.T) {
	fs := newFakeService("", "hello")
	fs.logs["hello"] = []byte("line 1\nline 2\n")
	started := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	fs.status = Status{
		Instances:     []InstanceStatus{{Function: "hello", Version: 1, ID: "i1", Pid: 42, State: "idle", MemoryBytes: 1 << 20, Started: started, Invocations: 3}},
		Zygotes:       []ZygoteStatus{{ID: "z0"}, {ID: "z1", Packages: []string{"numpy"}, Parent: "z0", Forks: 2}},
		GenericCached: 4,
		MemoryBytes:   64 << 20,
	}
	h := NewHandler(fs)

	rec := call(t, h, "GET", "/v1/functions/hello/logs", nil, nil)
	if rec.Code != 200 || rec.Body.String() != "line 1\nline 2\n" || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("logs: %d %v %q", rec.Code, rec.Header(), rec.Body)
	}
	rec = call(t, h, "GET", "/v1/functions/hello/logs?max=7", nil, nil)
	if rec.Body.String() != "line 2\n" {
		t.Errorf("logs?max=7: %q", rec.Body)
	}
	wantError(t, call(t, h, "GET", "/v1/functions/hello/logs?max=0", nil, nil), 400, "InvalidArgument")
	wantError(t, call(t, h, "GET", "/v1/functions/hello/logs?max=x", nil, nil), 400, "InvalidArgument")
	wantError(t, call(t, h, "GET", "/v1/functions/nope/logs", nil, nil), 404, "NotFound")

	rec = call(t, h, "GET", "/v1/status", nil, nil)
	st := decode[StatusInfo](t, rec)
	if rec.Code != 200 || st.Functions != 1 || st.GenericCached != 4 || st.MemoryBytes != 64<<20 || len(st.Instances) != 1 ||
		st.Instances[0] != (InstanceInfo{Function: "hello", Version: 1, ID: "i1", Pid: 42, State: "idle", MemoryBytes: 1 << 20, Started: started, Invocations: 3}) ||
		len(st.Zygotes) != 2 || st.Zygotes[1].Parent != "z0" || st.Zygotes[1].Forks != 2 {
		t.Fatalf("status: %d %s", rec.Code, rec.Body)
	}
	for _, want := range []string{`"generic_cached":4`, `"packages":[]`, `"memory_bytes"`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("status body lacks %s: %s", want, rec.Body)
		}
	}
}

func TestLambdaInvoke(t *testing.T) {
	fs := newFakeService("", "hello", "fails")
	fs.funcs["hello"].Version = 3
	fs.logs["hello"] = bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB
	var lastReqID atomic.Value
	fs.invoke = func(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error) {
		lastReqID.Store(o.RequestID)
		if _, err := fs.Function(name); err != nil {
			return nil, err
		}
		if name == "fails" {
			return &Result{RequestID: o.RequestID, Payload: []byte(`{"errorMessage":"boom","errorType":"Exception"}`), FunctionError: true, Start: "warm"}, nil
		}
		return &Result{RequestID: o.RequestID, Payload: payload, Start: "cold", Duration: time.Millisecond}, nil
	}
	h := NewHandler(fs)
	const base = "/2015-03-31/functions/"
	lambdaCall := func(path, invocationType, body string) *httptest.ResponseRecorder {
		t.Helper()
		if !strings.Contains(path, "/invocations") {
			path += "/invocations"
		}
		hdr := map[string]string{}
		if invocationType != "" {
			hdr["X-Amz-Invocation-Type"] = invocationType
		}
		return call(t, h, "POST", base+path, strings.NewReader(body), hdr)
	}
	// wantLambdaError checks the error shape SDKs parse: the status, the
	// x-amzn-ErrorType and x-amzn-RequestId, the body.
	wantLambdaError := func(t *testing.T, rec *httptest.ResponseRecorder, status int, errorType string) {
		t.Helper()
		if rec.Code != status || rec.Header().Get("x-amzn-ErrorType") != errorType {
			t.Fatalf("got %d %v, want %d %s; body %s", rec.Code, rec.Header(), status, errorType, rec.Body)
		}
		if rec.Header().Get("x-amzn-RequestId") == "" {
			t.Errorf("no x-amzn-RequestId: %v", rec.Header())
		}
		if e := decode[lambdaError](t, rec); e.Type != "User" || e.Message == "" {
			t.Errorf("body %s", rec.Body)
		}
	}

	t.Run("RequestResponse", func(t *testing.T) {
		for _, typ := range []string{"", "RequestResponse"} {
			rec := lambdaCall("hello", typ, `{"k":"v"}`)
			if rec.Code != 200 || rec.Body.String() != `{"k":"v"}` {
				t.Fatalf("%q: %d %s", typ, rec.Code, rec.Body)
			}
			hdr := rec.Header()
			if ids := hdr.Values("x-amzn-RequestId"); len(ids) != 1 || ids[0] != lastReqID.Load() || len(ids[0]) != 36 {
				t.Errorf("x-amzn-RequestId %v, the handler got %v", ids, lastReqID.Load())
			}
			if hdr.Get("X-Amz-Executed-Version") != "3" || hdr.Get("X-Amz-Function-Error") != "" || hdr.Get("X-Amz-Log-Result") != "" {
				t.Errorf("headers %v", hdr)
			}
		}
		// An empty payload is the empty object, as the aws CLI sends none.
		if rec := lambdaCall("hello", "", ""); rec.Code != 200 || rec.Body.String() != "{}" {
			t.Errorf("empty payload: %d %s", rec.Code, rec.Body)
		}
	})
	t.Run("function error", func(t *testing.T) {
		rec := lambdaCall("fails", "", `{}`)
		if rec.Code != 200 || rec.Header().Get("X-Amz-Function-Error") != "Unhandled" || !strings.Contains(rec.Body.String(), "boom") {
			t.Fatalf("%d %v %s", rec.Code, rec.Header(), rec.Body)
		}
	})
	t.Run("Tail", func(t *testing.T) {
		rec := call(t, h, "POST", base+"hello/invocations", strings.NewReader("{}"), map[string]string{"X-Amz-Log-Type": "Tail"})
		logs, err := base64.StdEncoding.DecodeString(rec.Header().Get("X-Amz-Log-Result"))
		if rec.Code != 200 || err != nil || len(logs) != 4096 || !bytes.HasSuffix(fs.logs["hello"], logs) {
			t.Fatalf("%d: %d bytes of log, %v", rec.Code, len(logs), err)
		}
		rec = call(t, h, "POST", base+"hello/invocations", strings.NewReader("{}"), map[string]string{"X-Amz-Log-Type": "Head"})
		wantLambdaError(t, rec, 400, "InvalidRequestContentException")
	})
	t.Run("Event", func(t *testing.T) {
		before := fs.asyncCalls.Load()
		rec := lambdaCall("hello", "Event", `{"e":1}`)
		if rec.Code != 202 || rec.Body.Len() != 0 || fs.asyncCalls.Load() != before+1 {
			t.Fatalf("%d %q, %d queued", rec.Code, rec.Body, fs.asyncCalls.Load()-before)
		}
		if rec.Header().Get("x-amzn-RequestId") == "" {
			t.Errorf("no x-amzn-RequestId: %v", rec.Header())
		}
		wantLambdaError(t, lambdaCall("hello", "Event", `"`+strings.Repeat("x", maxAsyncPayload)+`"`), 413, "RequestTooLargeException")
		wantLambdaError(t, lambdaCall("nope", "Event", `{}`), 404, "ResourceNotFoundException")
	})
	t.Run("DryRun", func(t *testing.T) {
		before := fs.asyncCalls.Load()
		rec := lambdaCall("hello", "DryRun", `{}`)
		if rec.Code != 204 || rec.Body.Len() != 0 || fs.asyncCalls.Load() != before {
			t.Fatalf("%d %q", rec.Code, rec.Body)
		}
		wantLambdaError(t, lambdaCall("nope", "DryRun", `{}`), 404, "ResourceNotFoundException")
	})
	t.Run("names and qualifiers", func(t *testing.T) {
		for path, status := range map[string]int{
			"hello/invocations?Qualifier=$LATEST":                                              200,
			"hello/invocations?Qualifier=3":                                                    200,
			"hello:3/invocations":                                                              200,
			"hello:$LATEST/invocations?Qualifier=$LATEST":                                      200,
			"arn:aws:lambda:us-east-1:123456789012:function:hello/invocations":                 200,
			"arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Ahello%3A3/invocations": 200,
			"123456789012:function:hello/invocations":                                          200,
			"hello/invocations?Qualifier=2":                                                    404,
			"hello:prod/invocations":                                                           404,
			"hello:3/invocations?Qualifier=2":                                                  400,
			"a:b:c:d:e/invocations":                                                            400,
			"bad.name/invocations":                                                             400,
		} {
			rec := call(t, h, "POST", base+path, strings.NewReader("{}"), nil)
			if rec.Code != status {
				t.Errorf("%s: %d, want %d; %s", path, rec.Code, status, rec.Body)
			}
			switch status {
			case 404:
				wantLambdaError(t, rec, 404, "ResourceNotFoundException")
			case 400:
				wantLambdaError(t, rec, 400, "InvalidParameterValueException")
			}
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		wantLambdaError(t, lambdaCall("hello", "Sometimes", `{}`), 400, "InvalidRequestContentException")
		wantLambdaError(t, lambdaCall("hello", "", `{"a":`), 400, "InvalidRequestContentException")
		wantLambdaError(t, lambdaCall("hello", "", `"`+strings.Repeat("x", maxSyncPayload)+`"`), 413, "RequestTooLargeException")
		wantLambdaError(t, lambdaCall("nope", "", `{}`), 404, "ResourceNotFoundException")
	})
}

func TestHTTPOpenLambda(t *testing.T) {
	fs := newFakeService("", "f", "fails")
	fs.invoke = func(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error) {
		if _, err := fs.Function(name); err != nil {
			return nil, err
		}
		if name == "fails" {
			return &Result{Payload: []byte(`{"errorMessage":"boom"}`), FunctionError: true, Start: "warm"}, nil
		}
		return &Result{Payload: []byte(`"done"`), Start: "fresh"}, nil
	}
	h := NewHandler(fs)
	rec := call(t, h, "POST", "/run/f", strings.NewReader(`{"x":1}`), nil)
	if rec.Code != 200 || rec.Body.String() != `"done"` {
		t.Fatalf("run: %d %s", rec.Code, rec.Body)
	}
	rec = call(t, h, "POST", "/run/fails", strings.NewReader(`{}`), nil)
	if rec.Code != 500 || rec.Body.String() != `{"errorMessage":"boom"}` {
		t.Fatalf("run fails: %d %s", rec.Code, rec.Body)
	}
	wantError(t, call(t, h, "POST", "/run/nope", nil, nil), 404, "NotFound")
	wantError(t, call(t, h, "POST", "/run/f", strings.NewReader("{"), nil), 400, "InvalidRequestContent")
}

func TestHTTPUnrouted(t *testing.T) {
	h := NewHandler(newFakeService("", "f"))
	wantError(t, call(t, h, "GET", "/nope", nil, nil), 404, "NoSuchRoute")
	rec := call(t, h, "GET", "/v1/functions/f/invoke", nil, nil)
	wantError(t, rec, 405, "MethodNotAllowed")
	if allow := rec.Header().Get("Allow"); allow != "POST" {
		t.Errorf("Allow %q", allow)
	}
	rec = call(t, h, "PATCH", "/v1/functions/f", nil, nil)
	wantError(t, rec, 405, "MethodNotAllowed")
	if allow := rec.Header().Get("Allow"); !strings.Contains(allow, "PUT") || !strings.Contains(allow, "DELETE") {
		t.Errorf("Allow %q", allow)
	}
	rec = call(t, h, "GET", "/2015-03-31/functions/f/invocations", nil, nil)
	if rec.Code != 405 || rec.Header().Get("x-amzn-ErrorType") == "" {
		t.Errorf("lambda GET: %d %v", rec.Code, rec.Header())
	}
}

// scrape returns the text exposition of h's /metrics.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := call(t, h, "GET", "/metrics", nil, nil)
	if rec.Code != 200 {
		t.Fatalf("metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestMetrics(t *testing.T) {
	fs := newFakeService("", "hello", "fails")
	fs.status = Status{
		Instances:     []InstanceStatus{{State: "busy"}, {State: "idle"}, {State: "idle"}},
		Zygotes:       []ZygoteStatus{{ID: "z0"}, {ID: "z1"}},
		GenericCached: 5,
		MemoryBytes:   123456,
	}
	fs.invoke = func(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error) {
		switch {
		case name == "fails":
			return &Result{Payload: []byte(`{}`), FunctionError: true, Start: "cold", Duration: 2 * time.Millisecond}, nil
		case string(payload) == `"overload"`:
			return nil, ErrOverloaded
		case string(payload) == `"timeout"`:
			return nil, ErrTimeout
		}
		if _, err := fs.Function(name); err != nil {
			return nil, err
		}
		return &Result{Payload: payload, Start: "warm", Duration: 300 * time.Microsecond}, nil
	}
	h := NewHandler(fs)
	for range 3 {
		call(t, h, "POST", "/v1/functions/hello/invoke", nil, nil)
	}
	call(t, h, "POST", "/2015-03-31/functions/fails/invocations", nil, nil)
	call(t, h, "POST", "/run/hello", strings.NewReader(`"overload"`), nil)
	call(t, h, "POST", "/run/hello", strings.NewReader(`"timeout"`), nil)
	call(t, h, "POST", "/v1/functions/no-such-function/invoke", nil, nil)
	call(t, h, "POST", "/run/ghost", strings.NewReader(`"overload"`), nil)
	call(t, h, "POST", "/v1/functions/hello/invoke?async=true", nil, nil)
	call(t, h, "GET", "/nope", nil, nil)

	text := scrape(t, h)
	for _, want := range []string{
		`sockfaas_invocations_total{function="hello",outcome="ok"} 3`,
		`sockfaas_invocations_total{function="fails",outcome="function_error"} 1`,
		`sockfaas_invocations_total{function="hello",outcome="overloaded"} 1`,
		`sockfaas_invocations_total{function="hello",outcome="timeout"} 1`,
		`sockfaas_invocations_total{function="",outcome="not_found"} 1`,
		`sockfaas_invocations_total{function="",outcome="overloaded"} 1`,
		`sockfaas_invocations_total{function="hello",outcome="queued"} 1`,
		`sockfaas_starts_total{function="hello",start="warm"} 3`,
		`sockfaas_starts_total{function="fails",start="cold"} 1`,
		`sockfaas_invocation_duration_seconds_bucket{function="hello",start="warm",le="0.0005"} 3`,
		`sockfaas_invocation_duration_seconds_count{function="fails",start="cold"} 1`,
		`sockfaas_request_duration_seconds_count{route="POST /v1/functions/{name}/invoke"} 5`,
		`sockfaas_request_duration_seconds_count{route="POST /2015-03-31/functions/{name}/invocations"} 1`,
		`sockfaas_request_duration_seconds_count{route="unmatched"} 1`,
		`sockfaas_instances{state="busy"} 1`,
		`sockfaas_instances{state="idle"} 2`,
		`sockfaas_instances{state="paused"} 0`,
		`sockfaas_zygotes 2`,
		`sockfaas_generic_cached 5`,
		`sockfaas_memory_bytes 123456`,
		`sockfaas_functions 2`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, "no-such-function") || strings.Contains(text, "ghost") {
		t.Error("a name that is not deployed made a series")
	}

	// Removing a function drops its series.
	if rec := call(t, h, "DELETE", "/v1/functions/hello", nil, nil); rec.Code != 204 {
		t.Fatalf("delete: %d", rec.Code)
	}
	if text := scrape(t, h); strings.Contains(text, `function="hello"`) {
		t.Error("series of a removed function remain")
	}
}

func TestMetricsRegisterer(t *testing.T) {
	reg := prometheus.NewRegistry()
	fs := newFakeService("", "hello")
	h := NewHandler(fs, WithRegisterer(reg))
	// A second handler on the same registry shares the series instead of
	// failing.
	h2 := NewHandler(fs, WithRegisterer(reg))
	call(t, h, "POST", "/v1/functions/hello/invoke", nil, nil)
	call(t, h2, "POST", "/v1/functions/hello/invoke", nil, nil)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
		if mf.GetName() == "sockfaas_invocations_total" {
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 2 {
				t.Errorf("invocations %v, want 2", v)
			}
		}
	}
	for _, name := range []string{"sockfaas_invocations_total", "sockfaas_starts_total", "sockfaas_invocation_duration_seconds", "sockfaas_request_duration_seconds", "sockfaas_instances", "sockfaas_functions"} {
		if !found[name] {
			t.Errorf("%s not registered", name)
		}
	}
	if found["go_goroutines"] {
		t.Error("the handler added the Go collector to a caller's registry")
	}
	if !strings.Contains(scrape(t, h), "sockfaas_functions 1") {
		t.Error("/metrics does not serve the given registry")
	}

	// A Registerer that cannot gather leaves /metrics to the caller.
	h3 := NewHandler(fs, WithRegisterer(prometheus.WrapRegistererWith(prometheus.Labels{"x": "y"}, prometheus.NewRegistry())))
	wantError(t, call(t, h3, "GET", "/metrics", nil, nil), 404, "NoSuchRoute")
}

func TestHTTPLogger(t *testing.T) {
	var buf testutil.SyncBuffer
	h := NewHandler(newFakeService("", "hello"), WithHTTPLogger(zerolog.New(&buf).Level(zerolog.DebugLevel)))
	call(t, h, "POST", "/v1/functions/hello/invoke", nil, nil)
	var ev map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(buf.String())), &ev); err != nil {
		t.Fatalf("log %q: %v", buf.String(), err)
	}
	if ev["level"] != "debug" || ev["method"] != "POST" || ev["path"] != "/v1/functions/hello/invoke" ||
		ev["func"] != "hello" || ev["status"] != float64(200) || ev["dur"] == nil {
		t.Errorf("log event %v", ev)
	}

	// A server error is logged with its cause, which the client never sees.
	buf.Reset()
	fs := newFakeService("", "hello")
	fs.invoke = func(context.Context, string, []byte, InvokeOptions) (*Result, error) {
		return nil, errors.New("disk on fire")
	}
	h = NewHandler(fs, WithHTTPLogger(zerolog.New(&buf).Level(zerolog.InfoLevel)))
	rec := call(t, h, "POST", "/v1/functions/hello/invoke", nil, nil)
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "fire") || !strings.Contains(buf.String(), "disk on fire") {
		t.Errorf("500: body %s, log %s", rec.Body, buf.String())
	}
}

// TestHTTPClientGone checks that a client that hangs up mid-call is only
// logged, and that its invocation's context is canceled.
func TestHTTPClientGone(t *testing.T) {
	var buf testutil.SyncBuffer
	fs := newFakeService("", "hello")
	entered := make(chan struct{})
	fs.invoke = func(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error) {
		close(entered)
		<-ctx.Done()
		return nil, fmt.Errorf("invoke %q: %w", name, ctx.Err())
	}
	h := NewHandler(fs, WithHTTPLogger(zerolog.New(&buf).Level(zerolog.DebugLevel)))
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, "POST", "/v1/functions/hello/invoke", nil)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		h.ServeHTTP(rec, req)
		close(done)
	}()
	<-entered
	cancel()
	<-done
	if rec.Code != statusClientClosed || rec.Body.Len() != 0 {
		t.Errorf("status %d body %q", rec.Code, rec.Body)
	}
	if log := buf.String(); !strings.Contains(log, "client went away") || strings.Contains(log, `"level":"error"`) {
		t.Errorf("log %s", log)
	}
}

func TestHTTPConcurrentInvokes(t *testing.T) {
	fs := newFakeService(t.TempDir(), "hello")
	h := NewHandler(fs, WithToken("t"))
	srv := httptest.NewServer(h)
	defer srv.Close()
	code := targz(t, map[string]string{"lambda_function.py": "def lambda_handler(e, c): pass\n"})

	const workers, calls = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*calls)
	for w := range workers {
		wg.Go(func() {
			for i := range calls {
				path, body, method := "/v1/functions/hello/invoke", `{"w":`+strconv.Itoa(w)+`,"i":`+strconv.Itoa(i)+`}`, "POST"
				switch i % 5 {
				case 1:
					path = "/2015-03-31/functions/hello/invocations"
				case 2:
					path = "/run/hello"
				case 3:
					path, body, method = "/v1/functions/new"+strconv.Itoa(w), string(code), "PUT"
				case 4:
					path, body, method = "/metrics", "", "GET"
				}
				req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer t")
				res, err := srv.Client().Do(req)
				if err != nil {
					errs <- err
					continue
				}
				got, _ := io.ReadAll(res.Body)
				res.Body.Close()
				switch {
				case res.StatusCode >= 300:
					errs <- fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, got)
				case method == "POST" && string(got) != body:
					errs <- fmt.Errorf("%s: got %s, want %s", path, got, body)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := fmt.Sprintf(`sockfaas_invocations_total{function="hello",outcome="ok"} %d`, workers*calls*3/5)
	req, _ := http.NewRequest("GET", srv.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer t")
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	text, _ := io.ReadAll(res.Body)
	if !strings.Contains(string(text), want) {
		t.Errorf("metrics lack %s", want)
	}
}

// ExampleNewHandler serves a Service (here the tests' fake, whose
// functions echo their event) and calls it through the native and the
// AWS Lambda APIs.
func ExampleNewHandler() {
	srv := httptest.NewServer(NewHandler(newFakeService("", "hello")))
	defer srv.Close()

	res, err := http.Post(srv.URL+"/v1/functions/hello/invoke", "application/json", strings.NewReader(`{"name":"world"}`))
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	fmt.Println(res.StatusCode, res.Header.Get("X-Sockfaas-Start"), string(body))

	req, _ := http.NewRequest("POST", srv.URL+"/2015-03-31/functions/hello/invocations", strings.NewReader(`{}`))
	req.Header.Set("X-Amz-Invocation-Type", "DryRun")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	res.Body.Close()
	fmt.Println(res.StatusCode)
	// Output:
	// 200 warm {"name":"world"}
	// 204
}

// BenchmarkHTTPInvoke measures the handler's own cost on the warm path,
// through a real loopback connection, with an instant fake invoker.
func BenchmarkHTTPInvoke(b *testing.B) {
	srv := httptest.NewServer(NewHandler(newFakeService("", "hello")))
	defer srv.Close()
	client := srv.Client()
	body := []byte(`{"name":"world"}`)
	for b.Loop() {
		res, err := client.Post(srv.URL+"/v1/functions/hello/invoke", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			b.Fatal(res.Status)
		}
	}
}

// TestWriteTimeout: a client that stops reading a large result is cut off
// once the write timeout passes, instead of holding the connection.
func TestWriteTimeout(t *testing.T) {
	svc := newFakeService(t.TempDir(), "big")
	big := bytes.Repeat([]byte("x"), 5<<20)
	svc.invoke = func(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error) {
		return &Result{Payload: append(append([]byte(`"`), big...), '"'), Start: "warm"}, nil
	}
	done := make(chan struct{})
	h := NewHandler(svc, WithWriteTimeout(300*time.Millisecond))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { done <- struct{}{} }()
		h.ServeHTTP(w, r)
	}))
	srv.Start()
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096) // the kernel buffers little for us
	}
	fmt.Fprintf(conn, "POST /v1/functions/big/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	// Read nothing: the handler must give up writing on its own.
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler still writes to a client that does not read")
	}
}
