package sandbox

import (
	"context"
	"io"
	"syscall"
	"time"

	"github.com/sockfaas/sockfaas/fsbind"
)

// Backend creates sandboxes of one kind. It is safe for concurrent use.
//
// Invariants:
//   - IDs are unique among the backend's live sandboxes; Create with a live
//     ID fails with ErrExists and changes nothing.
//   - Create either returns a usable sandbox or leaves nothing behind.
//   - Every live sandbox is recorded in the backend's state directory before
//     Create returns, so that Cleanup in a later process can remove it after
//     a crash.
//   - Close destroys every sandbox the backend still holds and releases
//     what it pre-created (the cgroup pool); after Close, Create returns
//     ErrState.
type Backend interface {
	// Name is a short label for logs and benchmarks ("lean", "libcontainer").
	Name() string
	// Create builds a sandbox from spec. It does not start any process.
	Create(ctx context.Context, id string, spec Spec) (Sandbox, error)
	// Close destroys all sandboxes and releases backend resources.
	Close(ctx context.Context) error
}

// Sandbox is an isolated root, a set of namespaces and a cgroup with limits.
//
// Invariants:
//   - Processes started in it see only the root described by its Spec: the
//     read-only base, the read-only binds, the writable scratch, /tmp, /proc
//     and /dev. Nothing else of the host file system is reachable.
//   - All its processes are in its cgroup(s) before they execute user code;
//     its limits apply to all of them together.
//   - Pause freezes every process in it; no process makes progress until
//     Unpause. Pause returns only once the freeze is complete.
//   - Destroy kills every process in it (also ones that forked or were
//     paused), reaps them, removes its mounts and returns or removes its
//     cgroups. Destroy is idempotent; after it, every other method returns
//     ErrState.
type Sandbox interface {
	// ID is the name given at Create.
	ID() string
	// Info describes where the sandbox lives on the host. Once Destroy has
	// finished it may list nothing but the ID and backend: a backend that
	// pools roots and cgroups hands them to other sandboxes.
	Info() Info
	// Start runs a process inside the sandbox. The first process creates the
	// sandbox's namespaces; a backend may refuse a second one with
	// ErrUnsupported. Start returns once the program has been executed (or
	// failed to be); the returned error then says which step failed.
	Start(ctx context.Context, p ProcessSpec) (Process, error)
	// Pause freezes all processes in the sandbox.
	Pause(ctx context.Context) error
	// Unpause thaws a paused sandbox.
	Unpause(ctx context.Context) error
	// Stats reads the sandbox's resource usage from its cgroups.
	Stats(ctx context.Context) (Stats, error)
	// Destroy kills everything and frees the sandbox.
	Destroy(ctx context.Context) error
}

// Process is a process started in a sandbox.
type Process interface {
	// Pid is the process ID in the host's PID namespace.
	Pid() int
	// Signal sends sig to the process. Signals act on the program as on
	// any other process even when it runs as PID 1 of its namespace (see
	// ProcessSpec.Init).
	Signal(sig syscall.Signal) error
	// Wait blocks until the process exits or ctx is done. It may be called
	// any number of times, from any goroutine, and always reports the same
	// status.
	Wait(ctx context.Context) (ExitStatus, error)
}

// ExitStatus says how a process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when a signal ended the process.
	Code int
	// Signal is the signal that ended the process, or 0.
	Signal syscall.Signal
	// OOMKilled is true when the kernel's OOM killer acted in the sandbox's
	// memory cgroup while the process ran.
	OOMKilled bool
}

// Success is true for a clean exit with code 0.
func (s ExitStatus) Success() bool { return s.Code == 0 && s.Signal == 0 && !s.OOMKilled }

// Info locates a sandbox on the host; tests and cleanup use it.
type Info struct {
	ID      string
	Backend string
	// Root is the host path of the sandbox's root directory, or "" when the
	// backend builds the root only inside the sandbox's mount namespace.
	Root string
	// Cgroups are the host directories of the sandbox's cgroups (one per
	// cgroup v1 hierarchy, or one on cgroup v2).
	Cgroups []string
	// Pids are the host PIDs of the processes started with Start.
	Pids []int
}

// Stats is a snapshot of a sandbox's resource usage.
type Stats struct {
	MemoryBytes     uint64        // current memory charge
	MemoryPeakBytes uint64        // high-water mark since the sandbox was created, when the kernel tracks it
	CPU             time.Duration // CPU time used by all processes
	Pids            uint64        // live tasks
	OOMKills        uint64        // OOM kills since the sandbox was created
}

// Namespaces is a set of Linux namespaces a sandbox gets of its own.
type Namespaces uint

const (
	NSMount Namespaces = 1 << iota
	NSPID
	NSIPC
	NSUTS
	NSNet
)

// DefaultNamespaces are those that pay for themselves: mount, pid, ipc and
// uts. Network isolation comes from the netns package instead of a fresh
// namespace per sandbox.
const DefaultNamespaces = NSMount | NSPID | NSIPC | NSUTS

// Has reports whether all of want are in n.
func (n Namespaces) Has(want Namespaces) bool { return n&want == want }

// Limits are enforced through the sandbox's cgroups. Zero means unlimited.
type Limits struct {
	MemoryBytes int64 // memory.limit_in_bytes / memory.max
	CPUMillis   int64 // CPU quota in thousandths of a CPU (1000 = one full CPU)
	Pids        int64 // pids.max: caps fork bombs
}

// Spec describes a sandbox. It is plain data; Validate checks it.
type Spec struct {
	// Root is the file system the sandbox sees.
	Root fsbind.Spec
	// Namespaces the sandbox gets of its own; zero means DefaultNamespaces.
	// The lean backend always needs NSMount. Without NSPID a sandbox's
	// /proc is mounted hidepid=invisible, so it lists only processes of its
	// own uid; sandboxes that share a uid (the default user) can then see
	// and signal each other: give each its own User, or keep NSPID.
	Namespaces Namespaces
	// NetNS is the path of an existing network namespace to join (an nsfs
	// file such as /proc/PID/ns/net or a bind mount of one; package netns
	// hands these out). "" means the host's network, unless Namespaces has
	// NSNet, which makes a private loopback-only one instead. Joining is
	// cheap; creating a namespace per sandbox is not.
	NetNS string
	// Hostname inside the UTS namespace; default: the sandbox ID.
	Hostname string
	// Limits for the sandbox's cgroups.
	Limits Limits
}

// User is a uid/gid pair.
type User struct {
	UID, GID uint32
}

// DefaultUser is who runs in a sandbox unless the caller says otherwise:
// nobody/nogroup, with no capabilities and no_new_privs.
var DefaultUser = User{UID: 65534, GID: 65534}

// ProcessSpec describes a process to start in a sandbox.
type ProcessSpec struct {
	// Args is argv; Args[0] is resolved inside the sandbox (absolute, or
	// looked up in PATH from Env, else /usr/local/bin:/usr/bin:/bin).
	Args []string
	// Env is the complete environment; nil means a minimal PATH and HOME.
	Env []string
	// Dir is the working directory inside the sandbox; default "/".
	Dir string
	// User to run as; nil means DefaultUser. Any user gets no capabilities
	// and no_new_privs.
	User *User
	// Stdio; nil means /dev/null. *os.File values are passed directly.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Init puts a minimal init at PID 1 of the sandbox's PID namespace,
	// with the program as its child: it forwards signals to the program
	// and reaps the orphans the program's children leave behind, like
	// docker run --init. By default the program is PID 1 itself, as in
	// runc and crun: Signal still acts as on any other process (the
	// backend stands in for the default actions the kernel drops for a
	// namespace's init), but orphaned processes become the program's
	// children, and it must reap them. Ignored without NSPID. Backends
	// without an init of their own (libct) refuse it with ErrUnsupported.
	Init bool
}
