package natsgw

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sockfaas/sockfaas/invoker"
)

// Headers of the messages between hosts. A call or an event carries its
// trace; a reply carries the result's metadata or an error's kind.
const (
	hdrCaller        = "Sockfaas-Caller"
	hdrCallerRequest = "Sockfaas-Caller-Request"
	hdrDepth         = "Sockfaas-Depth"
	hdrDeadline      = "Sockfaas-Deadline" // Unix nanoseconds
	hdrPath          = "Sockfaas-Path"     // function names, comma-separated
	hdrOrigin        = "Sockfaas-Origin"   // the sending host
	hdrEventID       = "Sockfaas-Event-Id"
	hdrRequestID     = "Sockfaas-Request-Id"
	hdrTakenFrom     = "Sockfaas-Taken-From" // an event moved from a dead host's backups

	hdrStatus        = "Sockfaas-Status" // ok, function-error, error
	hdrErrorKind     = "Sockfaas-Error-Kind"
	hdrStart         = "Sockfaas-Start"
	hdrDuration      = "Sockfaas-Duration"       // nanoseconds
	hdrStartDuration = "Sockfaas-Start-Duration" // nanoseconds
	hdrHost          = "Sockfaas-Host"
)

const (
	statusOK            = "ok"
	statusFunctionError = "function-error"
	statusError         = "error"
)

// headerReserve is what a message's headers may take; a payload larger
// than the connection's maximum less this is refused before it is sent.
const headerReserve = 4 << 10

// maxTraceDepth bounds a depth read from the wire, whatever the hosts'
// limits are.
const maxTraceDepth = 1000

// putTrace writes tr into h; nil writes nothing.
func putTrace(h nats.Header, tr *invoker.Trace) {
	if tr == nil {
		return
	}
	h.Set(hdrCaller, tr.Caller)
	h.Set(hdrCallerRequest, tr.CallerRequestID)
	h.Set(hdrDepth, strconv.Itoa(tr.Depth))
	if !tr.Deadline.IsZero() {
		h.Set(hdrDeadline, strconv.FormatInt(tr.Deadline.UnixNano(), 10))
	}
	h.Set(hdrPath, strings.Join(tr.Path, ","))
}

// getTrace reads a trace from h: nil when there is none (a call from
// outside), an error wrapping invoker.ErrInvalid when it is malformed.
func getTrace(h nats.Header) (*invoker.Trace, error) {
	ds := h.Get(hdrDepth)
	if ds == "" {
		return nil, nil
	}
	depth, err := strconv.Atoi(ds)
	if err != nil || depth < 1 || depth > maxTraceDepth {
		return nil, fmt.Errorf("%w: trace depth %q", invoker.ErrInvalid, ds)
	}
	tr := &invoker.Trace{Caller: h.Get(hdrCaller), CallerRequestID: h.Get(hdrCallerRequest), Depth: depth}
	if s := h.Get(hdrDeadline); s != "" {
		ns, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ns <= 0 {
			return nil, fmt.Errorf("%w: trace deadline %q", invoker.ErrInvalid, s)
		}
		tr.Deadline = time.Unix(0, ns)
	}
	if p := h.Get(hdrPath); p != "" {
		tr.Path = strings.Split(p, ",")
		if len(tr.Path) > maxTraceDepth {
			return nil, fmt.Errorf("%w: trace path of %d functions", invoker.ErrInvalid, len(tr.Path))
		}
		for _, name := range tr.Path {
			if err := invoker.ValidateName(name); err != nil {
				return nil, fmt.Errorf("trace path: %w", err)
			}
		}
	}
	return tr, nil
}

// putResult writes res into reply.
func putResult(reply *nats.Msg, res *invoker.Result) {
	reply.Header.Set(hdrStatus, statusOK)
	if res.FunctionError {
		reply.Header.Set(hdrStatus, statusFunctionError)
	}
	reply.Header.Set(hdrRequestID, res.RequestID)
	reply.Header.Set(hdrStart, res.Start)
	reply.Header.Set(hdrDuration, strconv.FormatInt(int64(res.Duration), 10))
	reply.Header.Set(hdrStartDuration, strconv.FormatInt(int64(res.StartDuration), 10))
	reply.Data = res.Payload
}

// putError writes err into reply: its kind and message.
func putError(reply *nats.Msg, err error) {
	reply.Header.Set(hdrStatus, statusError)
	reply.Header.Set(hdrErrorKind, invoker.ErrorKind(err))
	reply.Data = []byte(err.Error())
}

// getResult reads a reply: the result, or the error the other host
// answered with (which wraps the invoker error its kind names).
func getResult(reply *nats.Msg) (*invoker.Result, error) {
	h := reply.Header
	switch st := h.Get(hdrStatus); st {
	case statusOK, statusFunctionError:
		res := &invoker.Result{
			RequestID: h.Get(hdrRequestID), Payload: reply.Data, FunctionError: st == statusFunctionError,
			Start: h.Get(hdrStart),
		}
		if d, err := strconv.ParseInt(h.Get(hdrDuration), 10, 64); err == nil {
			res.Duration = time.Duration(d)
		}
		if d, err := strconv.ParseInt(h.Get(hdrStartDuration), 10, 64); err == nil {
			res.StartDuration = time.Duration(d)
		}
		return res, nil
	case statusError:
		msg := string(reply.Data)
		if host := h.Get(hdrHost); host != "" {
			msg = fmt.Sprintf("host %s: %s", host, msg)
		}
		kind := h.Get(hdrErrorKind)
		if kind == "Closed" {
			// The other host is stopping: unavailable to this one, which
			// itself is not closing.
			kind = "Unavailable"
		}
		return nil, invoker.ErrorFromKind(kind, msg)
	default:
		return nil, fmt.Errorf("%w: a reply without a status (%q) from %q", invoker.ErrUnavailable, st, h.Get(hdrHost))
	}
}

// putEvent writes ev's identity and trace into h.
func putEvent(h nats.Header, ev invoker.Event) {
	h.Set(nats.MsgIdHdr, ev.ID)
	h.Set(hdrEventID, ev.ID)
	if ev.RequestID != "" {
		h.Set(hdrRequestID, ev.RequestID)
	}
	putTrace(h, ev.Trace)
}

// getEvent reads the event of fn carried by a message with header h and
// body data.
func getEvent(fn string, h nats.Header, data []byte) (invoker.Event, error) {
	ev := invoker.Event{ID: h.Get(hdrEventID), RequestID: h.Get(hdrRequestID), Function: fn, Payload: data}
	if ev.ID == "" || len(ev.ID) > 128 {
		return ev, fmt.Errorf("%w: event id %q", invoker.ErrInvalid, ev.ID)
	}
	if len(ev.RequestID) > 128 {
		return ev, fmt.Errorf("%w: request id of %d bytes", invoker.ErrInvalid, len(ev.RequestID))
	}
	tr, err := getTrace(h)
	if err != nil {
		return ev, err
	}
	ev.Trace = tr
	return ev, nil
}

// validToken reports whether s can be one token of a subject (and the
// name of a durable consumer): letters, digits, - and _.
func ValidToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}
