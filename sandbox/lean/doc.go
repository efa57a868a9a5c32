// Package lean is sockfaas's default sandbox backend, after SOCK's lean
// containers: a root stitched from bind mounts (fsbind), only the namespaces
// that pay for themselves (mount, pid, ipc, uts by default), and limits from
// a pool of pre-created cgroups (cgpool) that are emptied and reused. Roots
// of the default Spec are built ahead, in the background, so that Create
// mostly takes one ready-made, and Destroy gives a root that is as it was
// built (nothing left in /tmp, /dev/shm or the scratch directory) back as
// such a spare instead of unmounting it.
//
// With WithParked (on by default), the backend also keeps a few sandboxes
// of the default root and namespaces one step further: a helper already
// cloned into fresh namespaces, in a pooled cgroup and pivoted into the
// root, waiting for a program. Create takes one and Start only hands it the
// program, which it execs: the clone, the copy of the root's mounts, the
// pivot and the unmount of the old root (with its RCU grace period) have
// happened on the other core. Bind, CloneRoot,
// StartPrivileged and a start with ProcessSpec.Init discard the parked
// helper, as does Destroy of a sandbox that never started.
//
// With a PID namespace the program is its PID 1, as with runc and crun,
// unless ProcessSpec.Init asks for an init in front of it. Signals act on
// it as on any process either way: for a PID 1 program that has no handler
// for a signal, which the kernel would drop, Process.Signal stands in with
// the default action (SIGKILL, reported as the signal sent, or SIGSTOP).
// Orphans of a PID 1 program are its own to reap.
//
// A process is started through a tiny static init helper (sandbox/internal/
// sbinit) that Go execs with the clone flags: it mounts /proc from inside the
// new PID namespace, pivots into the root, drops every capability, sets
// no_new_privs, switches to the sandbox user and execs the program. The Go
// binary is never re-executed and needs no cgo.
//
// The backend owns a state directory (default /run/sockfaas/lean): a lock
// file that makes one process its owner, one record per live sandbox, and
// the tmpfs the roots are built in. New cleans up whatever a killed owner
// left there (processes, mounts, cgroups) before it starts.
package lean
