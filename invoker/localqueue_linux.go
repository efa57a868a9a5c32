//go:build linux

package invoker

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sockfaas/sockfaas/fsbind"
)

// busSocket is where an instance reaches the local queue, in its scratch
// (the Python SDK's default: sockfaas.socket_path).
const busSocket = fsbind.ScratchDir + "/sockfaas.sock"

// The local queue's wire protocol, between the Python SDK
// (runtime/sockfaas) and the invoker, on a Unix stream socket. Each message,
// either way, is a frame:
//
//	uint32 head length, uint32 body length (big-endian)
//	head: JSON
//	body: raw bytes (the event, or the result: JSON)
//
// Request head: {"op": "invoke"|"invoke_async", "fn": callee,
// "rid": the caller's request id, "dl": the caller's deadline, Unix ms}.
// Response head: {"ok": true, "fe": handler raised, "id": async id,
// "rid": the callee's request id, "start": warm|paused|cold|fresh} or
// {"ok": false, "kind": error kind, "msg": message}. A connection carries
// one call at a time; the SDK keeps one per thread.
const (
	busFrameHead = 8
	busMaxHead   = 64 << 10
	// busKeepBuffer: a connection keeps its read buffer up to this size.
	busKeepBuffer = 256 << 10
)

type busRequest struct {
	Op         string `json:"op"`
	Function   string `json:"fn"`
	RequestID  string `json:"rid"`
	DeadlineMs int64  `json:"dl"`
}

type busResponse struct {
	OK            bool   `json:"ok"`
	FunctionError bool   `json:"fe,omitempty"`
	ID            string `json:"id,omitempty"`
	RequestID     string `json:"rid,omitempty"`
	Start         string `json:"start,omitempty"`
	Kind          string `json:"kind,omitempty"`
	Message       string `json:"msg,omitempty"`
}

// bus is one instance's end of the local queue: a listener on a socket in
// the instance's scratch, so that whatever arrives on it comes from that
// instance. It lives and dies with the instance.
type bus struct {
	iv     *Invoker
	inst   *instance
	ln     *net.UnixListener
	ctx    context.Context // cancelled by close: calls in flight end
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// listenBus opens inst's socket in scratch (the host side of the sandbox's
// scratch), owned by the instance's uid, and serves it.
func (iv *Invoker) listenBus(inst *instance, scratch string) error {
	path := filepath.Join(scratch, filepath.Base(busSocket))
	_ = os.Remove(path) // a generic sandbox is fresh; a leftover is not ours
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("local queue socket: %w", err)
	}
	// Only the instance's own uid may connect: the socket is how the
	// invoker knows who calls.
	err = os.Chown(path, int(inst.uid), int(inst.uid))
	if err == nil {
		err = os.Chmod(path, 0o600)
	}
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("local queue socket: %w", err)
	}
	b := &bus{iv: iv, inst: inst, ln: ln, conns: map[net.Conn]struct{}{}}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	inst.bus = b
	go b.accept()
	return nil
}

func (b *bus) accept() {
	for {
		c, err := b.ln.AcceptUnix()
		if err != nil {
			return // closed
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			_ = c.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		go b.serve(c)
	}
}

// close stops the listener (removing its socket), closes the connections
// and cancels the calls in flight. Idempotent.
func (b *bus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	b.cancel()
	_ = b.ln.Close()
	for c := range b.conns {
		_ = c.Close()
	}
	clear(b.conns)
}

func (b *bus) serve(c *net.UnixConn) {
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		_ = c.Close()
	}()
	br := bufio.NewReaderSize(c, 32<<10)
	var hdr [busFrameHead]byte
	var in, out []byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		hl, bl := binary.BigEndian.Uint32(hdr[:4]), binary.BigEndian.Uint32(hdr[4:])
		if hl > busMaxHead || bl > MaxPayloadBytes {
			// Answer, then hang up: the rest of the frame is not read.
			resp := busResponse{Kind: "TooLarge", Message: fmt.Sprintf(
				"request of %d bytes is over the limit of %d bytes (payload) and %d (head)", bl, MaxPayloadBytes, busMaxHead)}
			_ = writeFrame(c, &out, &resp, nil)
			return
		}
		// The frame is done with once answered (Invoke and Upstream do
		// not keep the payload; the async queue copies it): reuse
		// buffers up to a modest size.
		n := int(hl) + int(bl)
		if n > cap(in) {
			in = make([]byte, n)
		}
		buf := in[:n]
		if n > busKeepBuffer {
			in = nil
		}
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		var req busRequest
		var resp busResponse
		var body []byte
		if err := json.Unmarshal(buf[:hl], &req); err != nil {
			resp = busResponse{Kind: "Invalid", Message: "malformed request head: " + err.Error()}
		} else {
			resp, body = b.handle(&req, buf[hl:])
		}
		if err := writeFrame(c, &out, &resp, body); err != nil {
			return
		}
	}
}

// writeFrame sends one frame with one writev; out is a reusable buffer for
// the frame's head.
func writeFrame(c net.Conn, out *[]byte, resp *busResponse, body []byte) error {
	head, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	b := (*out)[:0]
	b = binary.BigEndian.AppendUint32(b, uint32(len(head)))
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, head...)
	*out = b
	bufs := net.Buffers{b}
	if len(body) > 0 {
		bufs = append(bufs, body)
	}
	_, err = bufs.WriteTo(c)
	return err
}

// handle serves one call of the instance.
func (b *bus) handle(req *busRequest, payload []byte) (busResponse, []byte) {
	tr, err := b.traceFor(req)
	if err == nil {
		switch req.Op {
		case "invoke":
			var res *Result
			res, err = b.iv.invokeFrom(b.ctx, req.Function, payload, tr)
			if err == nil {
				return busResponse{OK: true, FunctionError: res.FunctionError, RequestID: res.RequestID, Start: res.Start}, res.Payload
			}
		case "invoke_async":
			tr.Deadline = time.Time{} // an event runs on its own time
			var id string
			id, err = b.iv.invokeAsyncFrom(b.ctx, req.Function, payload, tr)
			if err == nil {
				return busResponse{OK: true, ID: id}, nil
			}
		default:
			err = fmt.Errorf("%w: unknown operation %q", ErrInvalid, req.Op)
		}
	}
	if e := b.iv.log.Debug(); e.Enabled() {
		e.Str("func", b.inst.fn.Name).Str("sandbox", b.inst.id).Str("callee", req.Function).Err(err).Msg("call from a function failed")
	}
	return busResponse{Kind: ErrorKind(err), Message: err.Error()}, nil
}

// traceFor builds the trace of a call from what the invoker knows of the
// calling instance's current request; of what the caller says it takes
// only a deadline earlier than the one it knows.
func (b *bus) traceFor(req *busRequest) (*Trace, error) {
	cs := b.inst.call.Load()
	if cs == nil { // cannot happen: instances run code only inside a call
		cs = newCallState(b.inst.fn.Name, b.inst.fn.Version, "", time.Time{}, nil)
	}
	if err := ValidateName(req.Function); err != nil {
		return nil, err
	}
	tr, err := cs.trace().next(req.Function, b.iv.local.maxDepth)
	if err != nil {
		return nil, err
	}
	tr.Caller, tr.CallerRequestID = cs.function, cs.requestID
	d := cs.deadline
	if req.DeadlineMs > 0 {
		if said := time.UnixMilli(req.DeadlineMs); d.IsZero() || said.Before(d) {
			d = said
		}
	}
	if !d.IsZero() {
		tr.Deadline = d.Add(-CallReserve)
	}
	return tr, nil
}

// invokeFrom runs a function's sync call: locally when the callee is
// deployed here (another host takes it when this one is overloaded), else
// upstream.
func (iv *Invoker) invokeFrom(ctx context.Context, name string, payload []byte, tr *Trace) (*Result, error) {
	return iv.Invoke(withTrace(ctx, tr), name, payload, InvokeOptions{})
}

// invokeAsyncFrom queues a function's event: locally when the callee is
// deployed here, else upstream.
func (iv *Invoker) invokeAsyncFrom(ctx context.Context, name string, payload []byte, tr *Trace) (string, error) {
	return iv.queueEvent(ctx, name, payload, InvokeOptions{}, tr)
}

// DeadLetters lists the asynchronous events that failed every attempt,
// oldest first (at most WithDeadLetters of them).
func (iv *Invoker) DeadLetters() []DeadLetter { return iv.async.dead.snapshot() }
