package zygote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

// ErrInstanceClosed is wrapped by Invoke's error when the instance closed
// the connection or died before answering: the caller should treat the
// instance as gone.
var ErrInstanceClosed = errors.New("instance closed the connection")

// InvokeRequest is one invocation of an instance's handler.
type InvokeRequest struct {
	// Payload is the event, JSON. Empty means {}.
	Payload []byte
	// RequestID becomes the handler's context.aws_request_id; empty lets
	// the instance make one up. It must not contain control characters.
	RequestID string
	// Deadline is what context.get_remaining_time_in_millis() counts down
	// to. Zero means the ctx deadline, if any. Invoke itself is bounded by
	// ctx, not by this.
	Deadline time.Time
}

// InvokeResult is an instance's answer.
type InvokeResult struct {
	// Payload is the handler's return value as JSON or, when FunctionError
	// is set or Status is not 200, the Lambda error object
	// {"errorMessage", "errorType", "stackTrace"}.
	Payload []byte
	// FunctionError is set when the handler raised (or returned something
	// that is not JSON): the instance answered X-Function-Error.
	FunctionError bool
	// Status is the HTTP status: 200, or 400 (payload is not JSON), 413
	// (payload too large), ... when the handler never ran.
	Status int
}

const (
	// Payloads up to this size are copied behind the request head and sent
	// with one write; larger ones go out with writev, uncopied.
	copyPayloadMax = 64 << 10
	// What an instance may send back: Lambda's own limit for a synchronous
	// response (6 MB). More is a protocol error, not an allocation.
	maxResponseBody = 6<<20 + 64<<10 // and room for the JSON around it
	maxResponseHead = 64 << 10
	readBufferSize  = 32 << 10
)

// Client talks to one instance over one persistent HTTP/1.1 connection on
// its Unix socket. The request is written and the response parsed here
// rather than by net/http: this is the warm path, and a pooled transport
// costs several times the instance's own work.
//
// A Client is not safe for concurrent use: an instance serves one request at
// a time, and so does its Client. After a timeout or a broken connection the
// next Invoke dials again; the caller usually kills the instance instead.
type Client struct {
	path     string
	conn     *net.UnixConn
	br       *bufio.Reader
	wbuf     []byte
	deadline time.Time // what is set on conn now
	closed   bool
}

// Dial connects to the instance listening on socketPath.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	c := &Client{path: socketPath}
	if err := c.dial(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) dial(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return fmt.Errorf("dial instance %s: %w", c.path, err)
	}
	c.conn = conn.(*net.UnixConn)
	if c.br == nil {
		c.br = bufio.NewReaderSize(c.conn, readBufferSize)
	} else {
		c.br.Reset(c.conn)
	}
	c.deadline = time.Time{}
	return nil
}

// drop closes the connection after an error or a "Connection: close".
func (c *Client) drop() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// Close closes the connection. Invoke fails afterwards.
func (c *Client) Close() error {
	c.closed = true
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// Invoke sends one invocation and waits for the answer. ctx bounds the whole
// exchange: when it expires (or is cancelled) the connection is closed and
// the error wraps context.DeadlineExceeded (or context.Canceled), while the
// handler may still be running in the instance: the caller kills it.
//
// A handler exception is not an error here: it is a result with
// FunctionError set. The error is for the transport: a timeout, or the
// instance gone (ErrInstanceClosed).
func (c *Client) Invoke(ctx context.Context, req InvokeRequest) (*InvokeResult, error) {
	if c.closed {
		return nil, fmt.Errorf("invoke %s: %w", c.path, net.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("invoke %s: %w", c.path, err)
	}
	for i := 0; i < len(req.RequestID); i++ {
		if b := req.RequestID[i]; b < 0x20 || b == 0x7f {
			return nil, fmt.Errorf("invoke %s: request id %q has control characters", c.path, req.RequestID)
		}
	}
	if c.conn == nil {
		if err := c.dial(ctx); err != nil {
			return nil, err
		}
	}
	ctxDeadline, hasDeadline := ctx.Deadline()
	if !ctxDeadline.Equal(c.deadline) {
		if err := c.conn.SetDeadline(ctxDeadline); err != nil {
			c.drop()
			return nil, fmt.Errorf("invoke %s: %w", c.path, err)
		}
		c.deadline = ctxDeadline
	}
	// Cancellation without a deadline (a caller that went away) must also
	// unblock the read: push the deadline into the past.
	var stop func() bool
	if ctx.Done() != nil {
		conn := c.conn
		stop = context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	}

	deadline := req.Deadline
	if deadline.IsZero() && hasDeadline {
		deadline = ctxDeadline
	}
	res, err := c.roundTrip(req, deadline)

	if stop != nil && !stop() {
		// The cancel hook ran (or is running): the connection's deadline is
		// in the past from now on, whatever the outcome.
		c.drop()
		if err != nil {
			return nil, fmt.Errorf("invoke %s: %w", c.path, ctx.Err())
		}
		return res, nil
	}
	if err != nil {
		c.drop()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			cause := ctx.Err()
			if cause == nil { // the connection's timer fired a hair before ctx's
				cause = context.DeadlineExceeded
			}
			return nil, fmt.Errorf("invoke %s: %w", c.path, cause)
		}
		return nil, fmt.Errorf("invoke %s: %w", c.path, err)
	}
	return res, nil
}

func (c *Client) roundTrip(req InvokeRequest, deadline time.Time) (*InvokeResult, error) {
	b := append(c.wbuf[:0], "POST /invoke HTTP/1.1\r\nHost: instance\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(req.Payload)), 10)
	if req.RequestID != "" {
		b = append(b, "\r\nX-Request-Id: "...)
		b = append(b, req.RequestID...)
	}
	if !deadline.IsZero() {
		b = append(b, "\r\nX-Deadline-Ms: "...)
		b = strconv.AppendInt(b, deadline.UnixMilli(), 10)
	}
	b = append(b, "\r\n\r\n"...)
	var werr error
	if len(req.Payload) <= copyPayloadMax {
		b = append(b, req.Payload...)
		_, werr = c.conn.Write(b)
	} else {
		bufs := net.Buffers{b, req.Payload}
		_, werr = bufs.WriteTo(c.conn)
	}
	if cap(b) <= 2*copyPayloadMax {
		c.wbuf = b[:0]
	}
	if werr != nil {
		if errors.Is(werr, os.ErrDeadlineExceeded) {
			return nil, werr
		}
		// The instance may have refused the body and closed (413) before
		// reading all of it: its answer can still be waiting.
		if res, _, err := c.readResponse(); err == nil {
			c.drop()
			return res, nil
		}
		return nil, fmt.Errorf("%w: %w", ErrInstanceClosed, werr)
	}
	res, keepAlive, err := c.readResponse()
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return nil, fmt.Errorf("%w: %w", ErrInstanceClosed, err)
		}
		return nil, err
	}
	if !keepAlive {
		c.drop()
	}
	return res, nil
}

// readResponse parses one response: status line, headers, Content-Length
// body. 1xx interim responses are skipped.
func (c *Client) readResponse() (res *InvokeResult, keepAlive bool, err error) {
	for {
		line, err := c.readLine()
		if err != nil {
			return nil, false, err
		}
		// "HTTP/1.1 200 OK"
		if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' {
			return nil, false, fmt.Errorf("bad status line %q", line)
		}
		status := 0
		for _, d := range line[9:12] {
			if d < '0' || d > '9' {
				return nil, false, fmt.Errorf("bad status line %q", line)
			}
			status = status*10 + int(d-'0')
		}
		keepAlive = line[7] == '1'
		length := -1
		res = &InvokeResult{Status: status}
		headBytes := len(line)
		for {
			h, err := c.readLine()
			if err != nil {
				return nil, false, err
			}
			if len(h) == 0 {
				break
			}
			if headBytes += len(h); headBytes > maxResponseHead {
				return nil, false, fmt.Errorf("response head over %d bytes", maxResponseHead)
			}
			name, value, ok := cutHeader(h)
			if !ok {
				return nil, false, fmt.Errorf("bad header line %q", h)
			}
			switch {
			case asciiEqualFold(name, "content-length"):
				n, err := strconv.Atoi(string(value))
				if err != nil || n < 0 {
					return nil, false, fmt.Errorf("bad Content-Length %q", value)
				}
				length = n
			case asciiEqualFold(name, "x-function-error"):
				res.FunctionError = true
			case asciiEqualFold(name, "connection"):
				if asciiEqualFold(value, "close") {
					keepAlive = false
				} else if asciiEqualFold(value, "keep-alive") {
					keepAlive = true
				}
			case asciiEqualFold(name, "transfer-encoding"):
				return nil, false, fmt.Errorf("unexpected Transfer-Encoding %q", value)
			}
		}
		if status >= 100 && status < 200 {
			continue
		}
		if length < 0 {
			return nil, false, errors.New("response without Content-Length")
		}
		if length > maxResponseBody {
			return nil, false, fmt.Errorf("response body of %d bytes is over %d", length, maxResponseBody)
		}
		// The instance runs untrusted code: memory grows with the bytes that
		// actually arrive, not with what Content-Length claims.
		if length <= readBufferSize {
			res.Payload = make([]byte, length)
			if _, err := io.ReadFull(c.br, res.Payload); err != nil {
				return nil, false, err
			}
		} else {
			var body bytes.Buffer
			if n, err := io.CopyN(&body, c.br, int64(length)); err != nil {
				return nil, false, fmt.Errorf("response body: %d of %d bytes: %w", n, length, err)
			}
			res.Payload = body.Bytes()
		}
		// Bytes after the response were not asked for: never read them as
		// the next response.
		if c.br.Buffered() > 0 {
			keepAlive = false
		}
		return res, keepAlive, nil
	}
}

// readLine returns one line without its CRLF; valid until the next read.
func (c *Client) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("response header line too long")
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func cutHeader(h []byte) (name, value []byte, ok bool) {
	for i, b := range h {
		if b == ':' {
			name, value = h[:i], h[i+1:]
			for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
				value = value[1:]
			}
			for len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
				value = value[:len(value)-1]
			}
			return name, value, i > 0
		}
	}
	return nil, nil, false
}

// asciiEqualFold compares b with a lower-case ASCII string, ignoring case,
// without allocating.
func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x := b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if x != lower[i] {
			return false
		}
	}
	return true
}

// WaitReady waits until something accepts connections on socketPath,
// polling with a short backoff (100 µs doubling to 5 ms). It is for fresh
// instances started without a ready fd. It only retries while the socket is
// missing or refusing; another error (permissions, a path too long) returns
// at once. It does not notice an instance that died before listening: the
// caller bounds ctx, or watches the process too.
func WaitReady(ctx context.Context, socketPath string) error {
	var d net.Dialer
	backoff := 100 * time.Microsecond
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		conn, err := d.DialContext(ctx, "unix", socketPath)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("wait for instance %s: %w (last: %v)", socketPath, ctxErr, err)
		}
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.EAGAIN) {
			return fmt.Errorf("wait for instance %s: %w", socketPath, err)
		}
		if timer == nil {
			timer = time.NewTimer(backoff)
		} else {
			timer.Reset(backoff)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for instance %s: %w (last: %v)", socketPath, ctx.Err(), err)
		case <-timer.C:
		}
		backoff = min(2*backoff, 5*time.Millisecond)
	}
}
