package zygote

import (
	"errors"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/sandbox"
)

// ErrZygote is wrapped by errors that come from a zygote itself rather than
// from the child it forked: the zygote is dead, its socket refuses, or it
// broke the protocol. A fork that fails this way is worth retrying on a
// restarted zygote; one that fails with a *ForkError is not.
var ErrZygote = errors.New("zygote unavailable")

// ForkError is a setup step of a forked child that failed, as the child
// reported it: `exec "nosuch": No such file or directory`, "join cgroup:
// Invalid argument", "load: Runtime.ImportModuleError: ...".
type ForkError struct {
	Step string // "exec", "chdir", "join cgroup", "load", ...
	Msg  string
}

func (e *ForkError) Error() string { return "zygote child: " + e.Step + ": " + e.Msg }

// Is lets errors.Is match the sandbox error vocabulary: a missing program or
// working directory is sandbox.ErrNotFound.
func (e *ForkError) Is(target error) bool {
	return target == sandbox.ErrNotFound && (e.Msg == "No such file or directory" || e.Msg == "not found")
}

// Socket is where a zygote listens inside its sandbox; the host sees it at
// the sandbox's Scratch()+"/zygote.sock".
const Socket = fsbind.ScratchDir + "/zygote.sock"

// Python is the interpreter a zygote runs: Debian's, which the default host
// base contains.
const Python = "/usr/bin/python3"

// DefaultReadyTimeout bounds how long a zygote may take to import its
// packages and listen, and a forked child to become ready.
const DefaultReadyTimeout = 60 * time.Second

// Config describes a zygote. It is plain data.
type Config struct {
	// ID names the zygote's lean sandbox; it must be unique among the lean
	// backend's live sandboxes. Default "zygote".
	ID string
	// Packages are import names (numpy, PIL) the zygote imports before
	// serving. An import that fails is fatal at Start. A child zygote lists
	// only what it imports on top of its parent.
	Packages []string
	// RuntimeDir is the host directory WriteRuntime wrote; it is bound
	// read-only at RuntimeDir inside the zygote's sandbox (and must be in
	// every target sandbox that forks serve instances, since the instance
	// module is imported from the zygote's copy before forking).
	RuntimeDir string
	// PackageDirs are extra read-only package directories; each bind's Dest
	// is put on sys.path. Target sandboxes must bind the same sources at the
	// same places for lazily imported submodules to resolve there.
	PackageDirs []fsbind.Bind
	// Limits for the zygote's own cgroup. Children are charged to their own
	// sandboxes' cgroups, not to these.
	Limits sandbox.Limits
	// Env is added to the zygote's environment (PATH, HOME and single-thread
	// BLAS/OpenMP settings by default; later entries win).
	Env []string
	// ReadyTimeout bounds startup; 0 means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Logger receives the zygote's stderr (one event per line, field
	// "zygote") and lifecycle events. The default discards.
	Logger *zerolog.Logger
}

// Kind is what a forked child becomes.
type Kind string

const (
	// KindExec execs ForkRequest.Argv.
	KindExec Kind = "exec"
	// KindServe serves ForkRequest.Function with the instance server.
	KindServe Kind = "serve"
	// KindZygote becomes a child zygote importing ForkRequest.Packages.
	KindZygote Kind = "zygote"
)

// Function configures the instance server of a KindServe child (the cfg of
// instance.serve). Socket must be under fsbind.ScratchDir.
type Function struct {
	Socket   string `json:"socket"`
	Dir      string `json:"dir"`
	Handler  string `json:"handler,omitempty"`
	Style    string `json:"style,omitempty"` // "lambda" (default) or "openlambda"
	Name     string `json:"name,omitempty"`
	MemoryMB int    `json:"memory_mb,omitempty"`
}

// ForkRequest says what to fork into a sandbox.
type ForkRequest struct {
	Kind Kind
	// Argv for KindExec; Argv[0] without '/' is looked up in Env's PATH,
	// else in /usr/local/bin:/usr/bin:/bin.
	Argv []string
	// Env is the child's whole environment ("K=V").
	Env []string
	// Dir is the working directory inside the sandbox; "" means "/".
	Dir string
	// UID and GID the child runs as, with no capabilities and no_new_privs.
	// Give every instance its own uid (see UIDPool): that is what keeps
	// instances from seeing and signalling each other. Ignored by
	// KindZygote, which stays uid 0 with its capabilities.
	UID, GID uint32
	// AllowRoot lets an exec or serve child run as uid or gid 0 (still with
	// no capabilities). Without it such a request is refused: uid 0 is the
	// zero value, and a uid-0 instance without a PID namespace can signal
	// every root process on the host.
	AllowRoot bool
	// Hostname set in the child's UTS namespace.
	Hostname string
	// Function for KindServe.
	Function *Function
	// Packages a KindZygote child imports.
	Packages []string
	// NetNS is a network namespace file to join; "" keeps the zygote's,
	// which is a private loopback-only one (never the host's).
	NetNS string
	// PrivateNet unshares a fresh loopback-only network namespace instead.
	PrivateNet bool
	// PIDNamespace runs a KindExec program in a new PID namespace (see the
	// package doc); it costs two more forks.
	PIDNamespace bool
	// Stdin, Stdout and Stderr are passed to the child as they are; nil is
	// /dev/null.
	Stdin, Stdout, Stderr *os.File
	// Timeout bounds how long the child may take to become ready (the
	// zygote kills it after); 0 means DefaultReadyTimeout.
	Timeout time.Duration
}

// request is the fork message's header on the wire; see
// runtime/forkserver.py. It carries nothing secret: the zygote server reads
// it, and whatever it reads stays in memory every later child inherits.
type request struct {
	Op        string   `json:"op"`
	Kind      Kind     `json:"kind"`
	FDs       []string `json:"fds"`
	UID       uint32   `json:"uid"`
	GID       uint32   `json:"gid"`
	Hostname  string   `json:"hostname,omitempty"`
	PIDNS     bool     `json:"pidns,omitempty"`
	NewNet    bool     `json:"newnet,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
	Trace     bool     `json:"trace,omitempty"`
}

// requestBody is the fork message's body: the environment (a function's
// secrets), argv and the function's config. It travels in a memfd passed
// with the header ("body"), which the zygote hands to the child unread;
// only the child, after the fork, reads it.
type requestBody struct {
	Dir      string    `json:"dir,omitempty"`
	Env      []string  `json:"env"`
	Argv     []string  `json:"argv,omitempty"`
	Function *Function `json:"function,omitempty"`
	Packages []string  `json:"packages,omitempty"`
	Paths    []string  `json:"paths,omitempty"`
	Socket   string    `json:"socket,omitempty"`
}

// reply is what the zygote sends back: the fork outcome, then the exit.
type reply struct {
	OK     bool   `json:"ok"`
	Pid    int    `json:"pid"`
	Error  string `json:"error"`
	Op     string `json:"op"`
	Status *int   `json:"status"`
	// Trace: the zygote's and the child's checkpoints of a traced fork.
	Trace []traceMark `json:"trace,omitempty"`
}
