package netns

import "errors"

// The error vocabulary. Call sites wrap these with context; callers test
// with errors.Is.
var (
	// ErrInvalid: the configuration or request is malformed or conflicts
	// with the host (a subnet overlapping a route, a host port already in
	// use); nothing was changed.
	ErrInvalid = errors.New("invalid argument")
	// ErrExhausted: the request is valid but nothing is free to serve it (no
	// slot without the container port, no host port left in the range, no
	// address left in the subnet).
	ErrExhausted = errors.New("exhausted")
	// ErrClosed: the Manager has been closed.
	ErrClosed = errors.New("manager closed")
	// ErrBusy: another live Manager owns the state directory.
	ErrBusy = errors.New("busy")
	// ErrUnsupported: this platform cannot do it.
	ErrUnsupported = errors.New("not supported")
)
