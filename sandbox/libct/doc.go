// Package libct is the full-isolation sandbox backend, built on runc's
// libcontainer: every sandbox is a libcontainer container with its own
// mount, PID, IPC, UTS, network (loopback only) and, where the kernel has
// it, cgroup namespace; a read-only root assembled from bind mounts; no
// capabilities; no_new_privs; and a cgroup (one per v1 hierarchy) with the
// spec's limits.
//
// It owns, under its state directory, libcontainer's own state (the record
// of live sandboxes that Cleanup reads after a crash), each sandbox's root
// and scratch directories and a generated minimal /etc; and, in the cgroup
// file systems, <parent>/<id> for each sandbox. It never touches the bind
// sources it is given, other backends' cgroups or the host's mounts.
//
// # Semantics worth knowing
//
//   - Every sandbox gets all the namespaces above whatever Spec.Namespaces
//     asks: this is the full-isolation backend.
//   - The cgroups exist from Create to Destroy; the namespaces come with the
//     first Start, whose process is PID 1 of the sandbox. Further Starts while
//     it runs join its namespaces and cgroups (like `runc exec`); once it has
//     exited, Start fails with sandbox.ErrState.
//   - Signals to that PID 1 act as on any process (the kernel would drop
//     those it has no handler for): see Process.Signal.
//   - Start returns once the program has been executed, not merely once
//     libcontainer's init is done.
//   - Env is honoured exactly: libcontainer insists on adding HOME, so a
//     program whose Env has no (or an empty) HOME is run through
//     /usr/bin/env, which removes it again before executing the program.
//   - Info().Root is "": the root exists only in the container's mount
//     namespace.
//   - A Stdin that is not an *os.File is copied by a goroutine that
//     libcontainer's exec.Cmd waits for: a reader that never returns keeps
//     Wait (and Destroy) from completing until its context ends.
//
// # What a program using it must do
//
// libcontainer starts a container by re-executing the current binary as
// "<argv0> init". A program that uses this backend must therefore:
//
//   - import this package (normally it does anyway); the import pulls in
//     libcontainer's cgo nsenter constructor, which runs before the Go
//     runtime in the re-executed child, so the binary must be built with
//     cgo;
//   - call [Init] first thing in main (or in TestMain for tests), before
//     flag parsing or any other work: in the re-executed child Init becomes
//     the container's init and never returns; everywhere else it returns at
//     once.
//
// # Logging
//
// libcontainer logs through logrus, a process-wide logger. [New] installs,
// once per process, a logrus hook that forwards libcontainer's messages at
// debug level to the zerolog logger given with [WithLogger] (the most
// recently created backend's logger wins), and silences logrus's own output.
// Programs that use logrus themselves will find its output discarded after
// the first New.
//
// # Side effects on the calling process worth knowing
//
//   - Each Start marks every open file descriptor above 2 close-on-exec
//     (libcontainer does this to keep host files out of the container).
//   - libcontainer chowns the stdio of a started process to the process's
//     uid; Start puts the previous owner back on *os.File stdio once the
//     program has started.
package libct
