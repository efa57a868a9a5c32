package invoker

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Size limits of the HTTP APIs, after AWS Lambda's.
const (
	// DefaultMaxUpload bounds a deployed .tar.gz, like Lambda's direct
	// upload of a zip.
	DefaultMaxUpload = 50 << 20
	// maxSyncPayload bounds the event of a synchronous invocation.
	maxSyncPayload = 6 << 20
	// maxAsyncPayload bounds the event of an asynchronous invocation, like
	// Lambda's Event invocations.
	maxAsyncPayload = 256 << 10
)

// Limits of GET /v1/functions/{name}/logs.
const (
	defaultLogBytes = 64 << 10
	maxLogBytes     = 16 << 20
)

// HTTPOption configures NewHandler.
type HTTPOption func(*httpConfig)

type httpConfig struct {
	token        string
	log          zerolog.Logger
	maxUpload    int64
	reg          prometheus.Registerer
	writeTimeout time.Duration
}

// WithToken requires "Authorization: Bearer <token>" on every request but
// GET /healthz; "" (the default) requires nothing, which suits a listener
// on the loopback interface only.
func WithToken(token string) HTTPOption { return func(c *httpConfig) { c.token = token } }

// WithWriteTimeout bounds the writing of each response once it starts
// (default DefaultWriteTimeout; d <= 0 keeps it): a client that stops
// reading a large result does not hold its connection and the result's
// memory for ever. The invocation itself is bounded by the function's
// timeout.
func WithWriteTimeout(d time.Duration) HTTPOption {
	return func(c *httpConfig) {
		if d > 0 {
			c.writeTimeout = d
		}
	}
}

// WithHTTPLogger injects the logger: one debug event per request, server
// errors at error level. The default discards.
func WithHTTPLogger(l zerolog.Logger) HTTPOption { return func(c *httpConfig) { c.log = l } }

// WithMaxUpload bounds the compressed size of a deployed archive (default
// DefaultMaxUpload; n <= 0 keeps the default).
func WithMaxUpload(n int64) HTTPOption {
	return func(c *httpConfig) {
		if n > 0 {
			c.maxUpload = n
		}
	}
}

// WithRegisterer registers the handler's metrics on reg instead of a
// registry of its own. GET /metrics then serves reg if it is also a
// prometheus.Gatherer (a *prometheus.Registry is), and is not routed
// otherwise: the caller exposes reg itself.
func WithRegisterer(reg prometheus.Registerer) HTTPOption {
	return func(c *httpConfig) { c.reg = reg }
}

// NewHandler serves svc over HTTP: the native API under /v1, AWS Lambda's
// Invoke API under /2015-03-31, OpenLambda's POST /run/{name}, /healthz
// and /metrics.
//
// Errors are JSON, {"error": "...", "type": "..."}, with the status codes
// of describeError; the Lambda API answers in Lambda's error shape instead. The
// handler keeps no state besides its metrics; it is safe for concurrent
// use, and it never reads more of a request body than its limit and one
// byte.
func NewHandler(svc Service, opts ...HTTPOption) http.Handler {
	cfg := httpConfig{log: zerolog.Nop(), maxUpload: DefaultMaxUpload, writeTimeout: DefaultWriteTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	h := &httpHandler{svc: svc, log: cfg.log, maxUpload: cfg.maxUpload, writeTimeout: cfg.writeTimeout, mux: http.NewServeMux()}
	if cfg.token != "" {
		sum := sha256.Sum256([]byte(cfg.token))
		h.tokenSum = sum[:]
	}

	reg := cfg.reg
	if reg == nil {
		// A registry of our own keeps two handlers in one process (tests,
		// a program embedding two invokers) from sharing series.
		own := prometheus.NewRegistry()
		own.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg = own
	}
	h.metrics = newMetrics(reg, svc, cfg.log)

	h.handle("GET /healthz", dialectNative, h.healthz)
	if g, ok := reg.(prometheus.Gatherer); ok {
		prom := promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: promLogger{cfg.log}})
		h.handle("GET /metrics", dialectNative, func(w *httpRecorder, r *http.Request) error {
			prom.ServeHTTP(w, r)
			return nil
		})
	}
	h.handle("GET /v1/status", dialectNative, h.status)
	h.handle("GET /v1/dead-letters", dialectNative, h.deadLetters)
	h.handle("GET /v1/functions", dialectNative, h.listFunctions)
	h.handle("GET /v1/functions/{name}", dialectNative, h.getFunction)
	h.handle("PUT /v1/functions/{name}", dialectNative, h.deploy)
	h.handle("DELETE /v1/functions/{name}", dialectNative, h.removeFunction)
	h.handle("GET /v1/functions/{name}/logs", dialectNative, h.logs)
	h.handle("POST /v1/functions/{name}/invoke", dialectNative, h.invokeNative)
	h.handle("GET /v1/invocations/{id}", dialectNative, h.invocation)
	h.handle("POST /2015-03-31/functions/{name}/invocations", dialectLambda, h.invokeLambda)
	h.handle("POST /run/{name}", dialectOpenLambda, h.runOpenLambda)
	return h
}

// dialect is the error and header vocabulary of a route.
type dialect int

const (
	dialectNative dialect = iota
	dialectLambda
	dialectOpenLambda
)

const lambdaPrefix = "/2015-03-31/"

func dialectOf(path string) dialect {
	switch {
	case strings.HasPrefix(path, lambdaPrefix):
		return dialectLambda
	case strings.HasPrefix(path, "/run/"):
		return dialectOpenLambda
	}
	return dialectNative
}

type httpHandler struct {
	svc          Service
	log          zerolog.Logger
	tokenSum     []byte // SHA-256 of the token; nil: no authentication
	maxUpload    int64
	writeTimeout time.Duration
	metrics      *httpMetrics
	mux          *http.ServeMux
}

var _ http.Handler = (*httpHandler)(nil)

// ServeHTTP authenticates, routes, and measures and logs every request,
// including those no route matches.
func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &httpRecorder{ResponseWriter: w, writeTimeout: h.writeTimeout, reqID: newRequestID()}
	if !h.authorized(r) {
		rec.route = "unauthorized"
		w.Header().Set("WWW-Authenticate", `Bearer realm="sockfaas"`)
		h.fail(rec, r, dialectOf(r.URL.Path), errUnauthorized)
	} else if route, pattern := h.mux.Handler(r); pattern == "" {
		h.unrouted(rec, r, route)
	} else {
		h.mux.ServeHTTP(rec, r)
	}
	dur := time.Since(start)
	route := rec.route
	if route == "" {
		route = "unmatched"
	}
	h.metrics.requestDuration.WithLabelValues(route).Observe(dur.Seconds())
	if e := h.log.Debug(); e.Enabled() {
		e.Str("method", r.Method).Str("path", r.URL.Path).Str("func", rec.fn).
			Int("status", rec.statusCode()).Dur("dur", dur).Msg("http request")
	}
}

// authorized compares hashes, so that neither the token's bytes nor its
// length show in the time the comparison takes.
func (h *httpHandler) authorized(r *http.Request) bool {
	if h.tokenSum == nil || (r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead)) {
		return true
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(sum[:], h.tokenSum) == 1
}

// unrouted answers a request no pattern matched in the API's error shape,
// keeping the mux's verdict between 404 and 405 and its Allow header.
func (h *httpHandler) unrouted(w *httpRecorder, r *http.Request, muxHandler http.Handler) {
	probe := &probeWriter{header: http.Header{}}
	muxHandler.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		w.Header()["Allow"] = probe.header["Allow"]
		h.fail(w, r, dialectOf(r.URL.Path), errMethodNotAllowed)
		return
	}
	h.fail(w, r, dialectOf(r.URL.Path), errNoRoute)
}

// handle registers a route whose function reports failure by returning an
// error, which fail turns into the dialect's error response.
func (h *httpHandler) handle(pattern string, d dialect, fn func(w *httpRecorder, r *http.Request) error) {
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rec, ok := w.(*httpRecorder)
		if !ok { // only ServeHTTP calls the mux, but stay total
			rec = &httpRecorder{ResponseWriter: w, writeTimeout: h.writeTimeout, reqID: newRequestID()}
		}
		rec.route = pattern
		rec.fn = r.PathValue("name")
		if d == dialectLambda {
			rec.Header().Set(amznRequestID, rec.reqID)
		} else {
			rec.Header().Set("X-Request-Id", rec.reqID)
		}
		if err := fn(rec, r); err != nil {
			h.fail(rec, r, d, err)
		}
	})
}

// Errors of the HTTP layer itself, for describeError.
var (
	errUnauthorized     = errors.New("missing or wrong bearer token")
	errNoRoute          = errors.New("no such route")
	errMethodNotAllowed = errors.New("method not allowed")
	errUnsupportedMedia = errors.New("unsupported content type: want application/gzip or application/octet-stream")
	// errBadContent is a request that cannot be understood: a body that
	// is not JSON, or a bad header. It wraps ErrInvalid.
	errBadContent = fmt.Errorf("%w: invalid request content", ErrInvalid)
)

// statusClientClosed is nginx's code for a client that went away before
// the answer; it only ever shows in logs and metrics.
const statusClientClosed = 499

// apiError is how an error is answered, in each API's vocabulary.
type apiError struct {
	status int    // every API's
	kind   string // native "type"

	lambdaType string // x-amzn-ErrorType
	// lambdaFunctionError, if set, is the errorType of the function error
	// (200, X-Amz-Function-Error) the Lambda API answers a synchronous
	// call with, as Lambda does for a timeout or a crashed runtime.
	lambdaFunctionError string

	// msg, if set, is shown instead of the error's own message.
	msg string

	retryAfter bool // add Retry-After: 1
	// internal: the message is not shown, the error is logged instead.
	internal bool
}

// describeError maps every error to its status codes: it is the one place
// where that happens. clientGone says the request's context is done, the
// client having closed the connection.
func describeError(err error, clientGone bool) apiError {
	var (
		tooBig  *http.MaxBytesError
		readErr *readError
	)
	switch {
	case clientGone || errors.Is(err, context.Canceled):
		return apiError{status: statusClientClosed, kind: "ClientClosedRequest", lambdaType: "ClientClosedRequest"}
	case errors.Is(err, errUnauthorized):
		return apiError{status: http.StatusUnauthorized, kind: "Unauthorized", lambdaType: "UnrecognizedClientException"}
	case errors.Is(err, errNoRoute):
		return apiError{status: http.StatusNotFound, kind: "NoSuchRoute", lambdaType: "UnknownOperationException"}
	case errors.Is(err, errMethodNotAllowed):
		return apiError{status: http.StatusMethodNotAllowed, kind: "MethodNotAllowed", lambdaType: "MethodNotAllowedException"}
	case errors.Is(err, errUnsupportedMedia):
		return apiError{status: http.StatusUnsupportedMediaType, kind: "UnsupportedMediaType", lambdaType: "UnsupportedMediaTypeException"}
	case errors.Is(err, ErrTooLarge), errors.As(err, &tooBig):
		return apiError{status: http.StatusRequestEntityTooLarge, kind: "TooLarge", lambdaType: "RequestTooLargeException"}
	case errors.Is(err, errBadContent), errors.As(err, &readErr):
		return apiError{status: http.StatusBadRequest, kind: "InvalidRequestContent", lambdaType: "InvalidRequestContentException"}
	case errors.Is(err, ErrNotFound):
		return apiError{status: http.StatusNotFound, kind: "NotFound", lambdaType: "ResourceNotFoundException"}
	case errors.Is(err, ErrInvalid):
		return apiError{status: http.StatusBadRequest, kind: "InvalidArgument", lambdaType: "InvalidParameterValueException"}
	case errors.Is(err, ErrOverloaded):
		return apiError{status: http.StatusTooManyRequests, kind: "TooManyRequests", lambdaType: "TooManyRequestsException", retryAfter: true}
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return apiError{status: http.StatusGatewayTimeout, kind: "Timeout", lambdaType: "ServiceException", lambdaFunctionError: "Sandbox.Timedout"}
	case errors.Is(err, ErrFunctionCrashed):
		// The error's detail is the instance's exit and the broken
		// connection to it: the server's log has it, the function's log
		// has the why.
		return apiError{status: http.StatusBadGateway, kind: "FunctionCrashed", lambdaType: "ServiceException",
			lambdaFunctionError: "Runtime.ExitError", msg: "the function's instance crashed while serving the call; see the function's logs"}
	case errors.Is(err, ErrBusy):
		return apiError{status: http.StatusConflict, kind: "Conflict", lambdaType: "ResourceConflictException"}
	case errors.Is(err, ErrClosed), errors.Is(err, ErrUnavailable):
		return apiError{status: http.StatusServiceUnavailable, kind: "Unavailable", lambdaType: "ServiceException", retryAfter: true}
	}
	return apiError{status: http.StatusInternalServerError, kind: "Internal", lambdaType: "ServiceException", internal: true}
}

// HTTPError is the body of the native API's error responses; a client can
// decode one and return it as its error.
type HTTPError struct {
	Message string `json:"error"`
	// Type names the kind of error: NotFound, InvalidArgument,
	// InvalidRequestContent, TooLarge, TooManyRequests, Timeout,
	// FunctionCrashed, Conflict, Unavailable, Unauthorized,
	// UnsupportedMediaType, NoSuchRoute, MethodNotAllowed or Internal.
	Type string `json:"type"`
}

func (e *HTTPError) Error() string { return e.Message }

// lambdaError is the body of the Lambda API's errors.
type lambdaError struct {
	Type    string `json:"Type"` // "User" or "Service", whose fault it is
	Message string `json:"message"`
	Reason  string `json:"Reason,omitempty"`
}

// fail answers err in d's error shape.
func (h *httpHandler) fail(w *httpRecorder, r *http.Request, d dialect, err error) {
	e := describeError(err, r.Context().Err() != nil)
	if e.status == statusClientClosed {
		h.log.Debug().Err(err).Str("path", r.URL.Path).Str("func", w.fn).Msg("client went away")
		w.WriteHeader(statusClientClosed)
		return
	}
	msg := err.Error()
	if e.msg != "" {
		msg = e.msg
		h.log.Info().Err(err).Str("path", r.URL.Path).Str("func", w.fn).Str("request_id", w.reqID).Msg("invocation failed")
	}
	if e.internal {
		h.log.Error().Err(err).Str("method", r.Method).Str("path", r.URL.Path).Str("func", w.fn).
			Str("request_id", w.reqID).Msg("request failed")
		msg = "internal error (request " + w.reqID + "; the server's log has the details)"
	}
	if e.retryAfter {
		w.Header().Set("Retry-After", "1")
	}
	if d != dialectLambda {
		writeJSON(w, e.status, HTTPError{Message: msg, Type: e.kind})
		return
	}
	body := lambdaError{Type: "User", Message: msg}
	if e.status >= 500 {
		body.Type = "Service"
	}
	if e.status == http.StatusTooManyRequests {
		body.Message = "Rate Exceeded."
		body.Reason = "ConcurrentInvocationLimitExceeded"
	}
	w.Header().Set(amznErrorType, e.lambdaType)
	writeJSON(w, e.status, body)
}

// writeJSON answers v as JSON. Values are the handler's own types, which
// always marshal.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":"internal error","type":"Internal"}`)
	}
	data = append(data, '\n')
	writeBody(w, status, "application/json", data)
}

func writeBody(w http.ResponseWriter, status int, contentType string, data []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data) // a write error is the client's going away
}

// readBody reads a request body of at most limit bytes: a larger
// Content-Length is refused before reading, and a body without one is
// cut after limit+1 bytes.
// bodyTimeout bounds how long a client may take to send a request body.
const bodyTimeout = 60 * time.Second

func readBody(w *httpRecorder, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: request body of %d bytes is over the limit of %d bytes", ErrTooLarge, r.ContentLength, limit)
	}
	// Memory grows with the bytes that arrive, not with what the client
	// announces: a Content-Length alone must not reserve megabytes.
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(min(r.ContentLength, 64<<10)))
	}
	// The body must arrive within bodyTimeout; the deadline is lifted again
	// before the (possibly long) invocation runs. A server-wide ReadTimeout
	// would instead cancel the request's context mid-invocation.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(bodyTimeout))
	_, err := buf.ReadFrom(limitBody(w, r, limit))
	_ = rc.SetReadDeadline(time.Time{})
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, fmt.Errorf("%w: request body is over the limit of %d bytes", ErrTooLarge, limit)
	case err != nil:
		return nil, &readError{err}
	}
	return buf.Bytes(), nil
}

// limitBody returns r's body cut after limit+1 bytes. http.MaxBytesReader
// is given the server's own ResponseWriter, which it tells to close the
// connection once the limit is passed, rather than drain the rest.
func limitBody(w *httpRecorder, r *http.Request, limit int64) io.ReadCloser {
	return http.MaxBytesReader(w.ResponseWriter, r.Body, limit)
}

// readEvent reads an invocation's event: JSON of at most limit bytes; an
// empty body is the empty object, as with Lambda.
func readEvent(w *httpRecorder, r *http.Request, limit int64) ([]byte, error) {
	payload, err := readBody(w, r, limit)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		return []byte("{}"), nil
	}
	if !json.Valid(payload) {
		return nil, fmt.Errorf("%w: the event is not valid JSON", errBadContent)
	}
	return payload, nil
}

// newRequestID returns a random (version 4) UUID, the form of Lambda's
// request IDs.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// validRequestID accepts a caller's X-Request-Id that is safe to pass on
// to a handler and to echo in headers and logs.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == ':'
		if !ok {
			return false
		}
	}
	return true
}

// recorder keeps what ServeHTTP logs and measures of a response: its
// status, and the route and function the mux found.
type httpRecorder struct {
	http.ResponseWriter
	writeTimeout time.Duration
	status       int
	route        string
	fn           string
	reqID        string
}

func (w *httpRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.startWriting()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *httpRecorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
		w.startWriting()
	}
	return w.ResponseWriter.Write(p)
}

// DefaultWriteTimeout is WithWriteTimeout's default: a 6 MiB result at
// 100 KiB/s takes a minute.
const DefaultWriteTimeout = 2 * time.Minute

// startWriting sets the write deadline for the response about to be
// written; writers that cannot take one (tests' recorders) are left be.
func (w *httpRecorder) startWriting() {
	if w.writeTimeout > 0 {
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.writeTimeout))
	}
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *httpRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *httpRecorder) statusCode() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// probeWriter takes what the mux's own 404 and 405 handlers write.
type probeWriter struct {
	header http.Header
	status int
}

func (p *probeWriter) Header() http.Header { return p.header }
func (p *probeWriter) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}
func (p *probeWriter) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return len(b), nil
}

// promLogger passes promhttp's errors (a collector failing) to zerolog.
type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) { l.log.Error().Msg(strings.TrimSpace(fmt.Sprintln(v...))) }

// errNoResult: the Service broke its contract, returning neither a result
// nor an error.
var errNoResult = errors.New("the invoker returned no result")

func errInvalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func errTooLargeUpload(size, limit int64) error {
	return fmt.Errorf("%w: upload of %d bytes is over the limit of %d bytes", ErrTooLarge, size, limit)
}

// invoke runs a synchronous invocation and counts it.
func (h *httpHandler) invoke(r *http.Request, name string, payload []byte, o InvokeOptions) (*Result, error) {
	res, err := h.svc.Invoke(r.Context(), name, payload, o)
	if err == nil && res == nil {
		err = errNoResult
	}
	h.metrics.invoked(name, res, err)
	return res, err
}

// invokeAsync queues an invocation and counts it as queued, or as what
// refused it. Its outcome is the invoker's to count: the HTTP layer never
// sees it unless a client asks.
func (h *httpHandler) invokeAsync(r *http.Request, name string, payload []byte, o InvokeOptions) (string, error) {
	id, err := h.svc.InvokeAsync(r.Context(), name, payload, o)
	h.metrics.queued(name, err)
	return id, err
}
