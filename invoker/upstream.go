package invoker

import (
	"context"
	"errors"
	"fmt"
)

// ErrUnavailable is wrapped by the errors of calls and events an upstream
// could not carry: its connection is down, or was lost while a call was in
// flight (the callee may or may not have run).
var ErrUnavailable = errors.New("upstream unavailable")

// Upstream is the gateway between this host and the others (issue 6, after
// SAND's global message bus): it delivers to this host the calls and events
// for the functions it serves, takes those this host cannot serve (the
// callee is not deployed here, or this host is overloaded), and keeps a
// backup copy of every asynchronous event this host serves itself, so that
// another host runs it if this one dies before it is done.
//
// NoUpstream is the single-host implementation; package
// github.com/sockfaas/sockfaas/invoker/natsgw is the NATS one.
// Implementations must be safe for concurrent use. Errors wrap ErrNotFound
// when no host serves a function, ErrUnavailable when the upstream cannot
// be reached, and otherwise the invoker's errors (ErrTimeout, ErrTooLarge,
// ErrOverloaded, ErrCallDepth, ErrFunctionCrashed, ...), so a caller sees a
// callee on another host fail as it would here. No method keeps payload
// once it returns.
type Upstream interface {
	// Attach starts delivering to h the calls and events for the
	// functions h serves, until Detach. The invoker calls it once, from
	// New, when it is ready to serve.
	Attach(ctx context.Context, h Host) error
	// Detach stops the deliveries; calls and events already delivered may
	// still finish (and be acknowledged) afterwards. The invoker calls it
	// first thing in Close. The Upstream's owner closes it after the
	// invoker.
	Detach(ctx context.Context) error

	// Invoke runs name on some host that serves it and waits for the
	// result. tr is the call's trace, nil for a call from outside.
	Invoke(ctx context.Context, name string, payload []byte, tr *Trace) (*Result, error)
	// Offload is Invoke on a host other than this one, for a call this
	// host is too busy to take; ErrOverloaded when there is none.
	Offload(ctx context.Context, name string, payload []byte, tr *Trace) (*Result, error)
	// InvokeAsync hands an event to the hosts that serve its function.
	InvokeAsync(ctx context.Context, ev Event) error
	// Backup records a copy of an event this host is about to run
	// itself. The invoker calls the returned Backup's Done when the
	// event's outcome is final; if this host dies first, another host
	// runs the event, with the same ID and RequestID. A nil Backup means
	// no copy is kept.
	Backup(ctx context.Context, ev Event) (Backup, error)
}

// Event is an asynchronous invocation as it travels between hosts.
type Event struct {
	// ID names the event wherever it goes: the key under which its
	// outcome is kept, and what makes a second delivery a duplicate.
	ID string
	// RequestID is what the handler sees as aws_request_id on every
	// attempt and every host: the idempotency key functions read. Empty:
	// ID.
	RequestID string
	Function  string
	Payload   []byte
	// Trace is the sending function's, nil for an event from outside.
	Trace *Trace
}

// ServedNotifier is implemented by an Upstream that wants to hear at once
// when the functions this host serves change (a deploy or a removal),
// rather than at its next look at Host.Served. The invoker calls
// ServedChanged after the change; an error is logged, not returned.
type ServedNotifier interface {
	ServedChanged(ctx context.Context) error
}

// Backup is the upstream copy of an event this host serves.
type Backup interface {
	// Done marks the event finished: no other host will run it.
	Done(ctx context.Context) error
}

// Host is what an Upstream needs of the invoker it serves: *Invoker
// provides one to Attach.
type Host interface {
	// Served lists the functions deployed on this host.
	Served() []string
	// Run runs a call delivered by the upstream, on this host only (it is
	// never passed on), and waits for its result; tr is the caller's
	// trace or nil.
	Run(ctx context.Context, name string, payload []byte, tr *Trace) (*Result, error)
	// Enqueue queues an event delivered by the upstream into this host's
	// asynchronous queue under its ID, with the queue's retries. done is
	// called once, when the event's outcome is final: err is nil when it
	// ran (its handler may still have failed, see the dead letters), and
	// wraps ErrClosed when this host stopped before the event finished
	// (it should then go to another host). An ID this host has seen
	// before is not run again: done follows the earlier run's outcome.
	// Errors: ErrOverloaded (queue full), ErrNotFound, ErrInvalid,
	// ErrTooLarge, ErrClosed; done is not called then.
	Enqueue(ev Event, done func(err error)) error
	// Workers is how many asynchronous events this host runs at once: an
	// upstream should not hand it many more than that, while other hosts
	// may have room.
	Workers() int
}

// NoUpstream is the Upstream of a single host: nothing is served
// elsewhere and no backup is kept.
type NoUpstream struct{}

var _ Upstream = NoUpstream{}

func errNoUpstream(name string) error {
	return fmt.Errorf("function %q is not deployed on this host and there is no upstream: %w", name, ErrNotFound)
}

// Attach implements Upstream: nothing is delivered.
func (NoUpstream) Attach(context.Context, Host) error { return nil }

// Detach implements Upstream.
func (NoUpstream) Detach(context.Context) error { return nil }

// Invoke implements Upstream: ErrNotFound.
func (NoUpstream) Invoke(ctx context.Context, name string, payload []byte, tr *Trace) (*Result, error) {
	return nil, errNoUpstream(name)
}

// Offload implements Upstream: ErrOverloaded, there is no other host.
func (NoUpstream) Offload(ctx context.Context, name string, payload []byte, tr *Trace) (*Result, error) {
	return nil, fmt.Errorf("no other host to take %q: %w", name, ErrOverloaded)
}

// InvokeAsync implements Upstream: ErrNotFound.
func (NoUpstream) InvokeAsync(ctx context.Context, ev Event) error {
	return errNoUpstream(ev.Function)
}

// Backup implements Upstream: no copy.
func (NoUpstream) Backup(context.Context, Event) (Backup, error) { return nil, nil }

// ErrorKind names err's kind, the invoker error it wraps, for carrying it
// across a process boundary (the SDK's InvokeError.kind, an upstream's
// wire format): NotFound, CallDepth, TooLarge, Invalid, Overloaded,
// Timeout, Crashed, Closed, Unavailable or Internal. ErrorFromKind turns
// it back into an error.
func ErrorKind(err error) string {
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			return k.kind
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "Timeout"
	case errors.Is(err, context.Canceled):
		return "Closed"
	}
	return "Internal"
}

// ErrorFromKind is an error with message msg that wraps the invoker error
// kind names (see ErrorKind); an unknown kind is an internal error.
func ErrorFromKind(kind, msg string) error {
	for _, k := range errorKinds {
		if k.kind == kind {
			return &kindError{msg: msg, err: k.err}
		}
	}
	return errors.New(msg)
}

var errorKinds = []struct {
	kind string
	err  error
}{
	{"NotFound", ErrNotFound},
	{"CallDepth", ErrCallDepth},
	{"TooLarge", ErrTooLarge},
	{"Invalid", ErrInvalid},
	{"Overloaded", ErrOverloaded},
	{"Timeout", ErrTimeout},
	{"Crashed", ErrFunctionCrashed},
	{"Closed", ErrClosed},
	{"Unavailable", ErrUnavailable},
}

// kindError is an error from another process: its message, and the kind's
// sentinel for errors.Is.
type kindError struct {
	msg string
	err error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.err }
