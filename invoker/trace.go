package invoker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultMaxCallDepth is how many functions a call chain may hold, the
// first one (called from outside) included, when WithMaxCallDepth does not
// say otherwise.
const DefaultMaxCallDepth = 8

// ErrCallDepth is wrapped by the error of a function-to-function call that
// would make its chain longer than the configured limit: a runaway
// recursion, or a cycle between functions.
var ErrCallDepth = errors.New("call chain too deep")

// Trace is what a call made by a function carries: who called, how deep the
// chain is, and the deadline the callee inherits. The invoker builds it from
// what it knows about the calling instance (the socket the call came in on
// names the instance), never from what the caller says about itself.
type Trace struct {
	// Caller is the calling function, "name@version".
	Caller string
	// CallerRequestID is the request the caller was serving.
	CallerRequestID string
	// Depth counts the functions of the chain the callee will make: 2 for
	// a function called by a function called from outside.
	Depth int
	// Deadline is when the callee must be done; zero: its own timeout
	// only (async events do not inherit their sender's deadline).
	Deadline time.Time
	// Path names the functions of the chain so far, the first one first.
	Path []string
}

// String renders the chain for error messages: "a → b → c".
func (t *Trace) String() string { return strings.Join(t.Path, " → ") }

// next is the trace of a call by the function serving t to callee.
func (t *Trace) next(callee string, maxDepth int) (*Trace, error) {
	if t.Depth+1 > maxDepth {
		return nil, fmt.Errorf("%w: %s → %s would make %d calls deep, the limit is %d",
			ErrCallDepth, t, callee, t.Depth+1, maxDepth)
	}
	return &Trace{Depth: t.Depth + 1, Path: append(t.Path[:len(t.Path):len(t.Path)], callee)}, nil
}

type traceKey struct{}

// withTrace makes tr the trace of the invocation run under ctx.
func withTrace(ctx context.Context, tr *Trace) context.Context {
	return context.WithValue(ctx, traceKey{}, tr)
}

// traceFrom is the trace of the invocation run under ctx: nil for a call
// from outside.
func traceFrom(ctx context.Context) *Trace {
	tr, _ := ctx.Value(traceKey{}).(*Trace)
	return tr
}

// callState is what the invoker remembers of the call an instance serves
// (or served last): the trace its own calls start from.
type callState struct {
	function  string // name@version
	requestID string
	deadline  time.Time
	depth     int
	path      []string
}

// newCallState is the state of an instance of fn serving reqID under tr
// (nil: a call from outside) until deadline.
func newCallState(name string, version int, reqID string, deadline time.Time, tr *Trace) *callState {
	cs := &callState{function: fmt.Sprintf("%s@%d", name, version), requestID: reqID, deadline: deadline, depth: 1, path: []string{name}}
	if tr != nil {
		cs.depth, cs.path = tr.Depth, tr.Path
	}
	return cs
}

// trace is the state's own chain, for building its calls' traces.
func (cs *callState) trace() *Trace {
	return &Trace{Caller: cs.function, CallerRequestID: cs.requestID, Depth: cs.depth, Deadline: cs.deadline, Path: cs.path}
}

type localOnlyKey struct{}

// withLocalOnly marks an invocation delivered by the upstream: it runs on
// this host or fails, and is never passed on (no loops between hosts).
func withLocalOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, localOnlyKey{}, true)
}

// isLocalOnly reports whether ctx carries withLocalOnly's mark.
func isLocalOnly(ctx context.Context) bool {
	b, _ := ctx.Value(localOnlyKey{}).(bool)
	return b
}
