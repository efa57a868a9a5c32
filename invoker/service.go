package invoker

import (
	"context"
	"errors"
	"time"
)

// Service is what the HTTP APIs (and the CLI through them) need of an
// invoker. *Invoker implements it; the HTTP layer depends only on this, so
// it can be tested on its own.
type Service interface {
	// Deploy registers a new version of a function (see Registry.Deploy).
	Deploy(ctx context.Context, name string, src Source) (*Function, error)
	// Functions lists the newest version of every function.
	Functions() []*Function
	// Function returns the newest version of name, or ErrNotFound.
	Function(name string) (*Function, error)
	// Remove deletes every version of name and stops its instances.
	Remove(ctx context.Context, name string) error

	// Invoke runs name on payload and waits for the result. A handler
	// error is a Result with FunctionError set, not an error; errors are
	// for everything else (ErrNotFound, ErrOverloaded, ErrTimeout,
	// ErrTooLarge, ...).
	Invoke(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error)
	// InvokeAsync queues an invocation and returns its ID at once.
	InvokeAsync(ctx context.Context, name string, payload []byte, o InvokeOptions) (string, error)
	// AsyncResult reports a queued invocation: its Result once done
	// (done=true), or done=false while queued or running; ErrNotFound for
	// an unknown or expired ID.
	AsyncResult(id string) (res *Result, done bool, err error)

	// Instances lists live instances, zygotes and cache sizes (sockfaas ps).
	Status() Status
	// Logs returns up to max bytes of the end of name's captured handler
	// output (stdout and stderr of its instances).
	Logs(name string, max int) ([]byte, error)
	// DeadLetters lists asynchronous events that failed every attempt,
	// oldest first.
	DeadLetters() []DeadLetter
}

// InvokeOptions are per-call settings.
type InvokeOptions struct {
	// RequestID is passed to the handler (context.aws_request_id); empty
	// means a new one.
	RequestID string
	// Timeout overrides the function's manifest timeout when shorter; 0
	// keeps it.
	Timeout time.Duration
}

// Result is what an invocation produced.
type Result struct {
	RequestID string
	// Payload is the handler's JSON result, or Lambda's error JSON
	// (errorMessage, errorType, stackTrace) when FunctionError is set.
	Payload       []byte
	FunctionError bool
	// Start says where the instance came from: "warm", "paused", "cold"
	// (a zygote fork into a cached sandbox) or "fresh" (a new interpreter).
	Start string
	// Duration is the whole call; StartDuration the part spent getting an
	// instance (acquiring, resuming or creating it), so Duration minus
	// StartDuration is the handler's run.
	Duration      time.Duration
	StartDuration time.Duration
}

// Status is a snapshot of the invoker for sockfaas ps and /metrics.
type Status struct {
	Functions int
	Instances []InstanceStatus
	Zygotes   []ZygoteStatus
	// GenericCached is the number of ready, unbound sandboxes.
	GenericCached int
	MemoryBytes   uint64
	// Evictions counts instances closed to stay within the memory budget
	// (or a per-function idle cap) since the invoker started.
	Evictions uint64
}

// InstanceStatus describes one live instance.
type InstanceStatus struct {
	Function    string
	Version     int
	ID          string
	Pid         int
	State       string // "busy", "idle", "paused"
	MemoryBytes uint64
	Started     time.Time
	Invocations uint64
}

// ZygoteStatus describes one zygote of the tree.
type ZygoteStatus struct {
	ID          string
	Packages    []string
	Parent      string
	MemoryBytes uint64
	Forks       uint64
}

// Errors of the invoke path; the HTTP layer maps them to status codes in one
// place (ErrNotFound 404, ErrInvalid 400, ErrTooLarge 413, ErrOverloaded 429
// with Retry-After, ErrTimeout 504 or a Lambda timeout error, ErrBusy 409).
var (
	ErrOverloaded = errors.New("too many requests")
	ErrTimeout    = errors.New("task timed out")
)
