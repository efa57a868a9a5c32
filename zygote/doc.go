// Package zygote forks Python instances from pre-imported interpreters into
// new lean sandboxes, after SOCK's zygotes, and organises those interpreters
// as a tree keyed by package set that grows where demand is.
//
// It owns the Python runtime shipped in the binary (runtime/: the fork
// server, the instance server, the requirement resolver; see WriteRuntime)
// and the Go side that drives it: Zygote, Instance, Tree, Backend and the
// instance client (Dial, Invoke). It never builds roots or cgroups itself:
// sandboxes come from package sandbox/lean, and the Go process never enters
// a namespace (Go cannot fork; the zygote's children do every step).
//
// # A zygote
//
// A Zygote is /usr/bin/python3 running runtime/forkserver.py in a lean
// sandbox of its own: the default host base, the runtime bound read-only at
// RuntimeDir, the configured package directories, its own cgroup and memory
// limit, and mount, ipc and uts namespaces but no PID namespace, so the pids
// it reports are host pids. It runs as uid 0 with every capability
// (lean's StartPrivileged): it needs them to put its children into other
// sandboxes. It pre-imports its packages, resolves every libc function its
// children need, and listens on a SOCK_SEQPACKET socket in its scratch
// directory.
//
// Fork sends the zygote, on a fresh connection, one JSON header with the
// target sandbox's detached root mount tree (lean's CloneRoot), its
// cgroup.procs files, a memfd holding the request's body (environment,
// argv, function config: the secrets) and optionally a network namespace
// and stdio, as SCM_RIGHTS. The zygote never reads the body, only the child
// it forks does: what the zygote reads stays in the memory every later
// child inherits. The zygote hands it to a spare child it forked ahead of time
// (after gc.freeze(), and warmed up on a stand-in handler so that few
// copy-on-write faults are left for the request's path), or forks one; the
// zygote itself ran that request path on stand-ins before its first fork,
// so that what CPython writes into code objects on their first calls is
// written once, in pages every child shares. The child joins the
// cgroup (before touching any page of its own), unshares mount, uts and ipc,
// stacks the root on /tmp, mounts /proc with hidepid=invisible, pivots into
// the root, sets the hostname and drops to the requested uid/gid with no
// capabilities and no_new_privs; then it execs a program (KindExec), serves
// a function with the instance server (KindServe) or becomes a child zygote
// that imports more (KindZygote). The zygote answers once the child is
// ready, and reports the child's exit on the same connection; closing the
// connection kills the child. See runtime/forkserver.py for the protocol.
// The zygote sets no_new_privs and empties its capability bounding and
// ambient sets and its supplementary groups once at start (it keeps its
// effective capabilities): children inherit that instead of paying for it.
//
// With SOCKFAAS_ZYGOTE_TRACE set in the Go process's environment, every
// fork is traced: checkpoints of the Go side, the zygote and the child are
// logged at debug level ("fork trace"), microseconds per step.
//
// # Keeping instances apart without a PID namespace
//
// A PID namespace costs a second fork (about 1.5 ms from a numpy zygote), so
// forked instances do without one by default. Instead every instance runs as
// its own uid (UIDPool hands them out; the scratch directory is chowned to
// it): with /proc mounted hidepid=invisible a process sees only processes it
// could ptrace, which excludes other uids and every privileged process, and
// kill() across uids fails. Callers that give two instances the same uid
// give up that separation. ForkRequest.PIDNamespace asks for a PID namespace
// instead (exec only): the child then stays outside as a small monitor that
// mirrors the program's exit status, with a reaper as PID 1 and the program
// as PID 2.
//
// # Trust boundary
//
// Nothing a forked child writes back is trusted: until it is ready a serve
// child runs the function's module and a child zygote its packages, with
// the zygote's ready pipe open. The zygote takes from it only "ready" or a
// bounded error text (anything else kills that child and fails that fork
// with a ForkError at step "protocol"), reports the pid it forked itself
// (the program's pid only from the monitor of a PID-namespace exec child),
// and the Go side refuses a pid that is not in the target sandbox's cgroup.
// A child dies with the zygote until it is ready (parent-death signal); a
// fork that fails with ErrZygote kills what it may have left in the target
// sandbox (processes there that the sandbox does not list and whose parent
// is outside it), so a retry into the same sandbox starts clean.
//
// # The tree
//
// Tree keeps zygotes keyed by package set: a root, static children from
// configuration, and children it grows by itself for requirement sets that
// are requested often. See Tree for the policy and its knobs.
//
// # As a sandbox backend
//
// Backend implements sandbox.Backend over a lean backend and one root
// zygote, forking every process from the zygote: the lean conformance suite
// (sandbox/sandboxtest) runs against zygote-forked processes.
package zygote
