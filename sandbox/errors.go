package sandbox

import "errors"

// The error vocabulary. Backends wrap these with context
// (fmt.Errorf("start in %q: %w", id, ErrState)); callers test with errors.Is.
var (
	// ErrNotFound: no sandbox, process or file by that name.
	ErrNotFound = errors.New("not found")
	// ErrExists: a sandbox with that ID is already live.
	ErrExists = errors.New("already exists")
	// ErrInvalid: the request itself is malformed; nothing was changed.
	ErrInvalid = errors.New("invalid argument")
	// ErrState: the request does not fit the sandbox's current state
	// (starting a process in a destroyed sandbox, pausing twice, ...).
	ErrState = errors.New("wrong state")
	// ErrUnsupported: this kernel, cgroup layout or backend cannot do it.
	ErrUnsupported = errors.New("not supported")
	// ErrBusy: another live process owns the state directory.
	ErrBusy = errors.New("busy")
)
