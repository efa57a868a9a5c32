// Package sbinit starts a program inside fresh namespaces through a tiny
// init helper, sockfaas-init (csrc/sbinit.c), so that the Go runtime never
// has to run code between fork and exec.
//
// The helper is a freestanding static C program of a few KB, embedded in
// the Go binary and executed from a sealed memfd. Started with the clone
// flags, it makes its mounts private, sets the hostname, brings up
// loopback, mounts /proc and pivots into the sandbox root, drops every
// privilege (no_new_privs, empty bounding set, no capabilities even for
// uid 0) and execs the program. With a PID namespace it stays behind as
// PID 1: it forwards signals to the program, reaps orphans, and reports the
// program's exit status; with Config.NoInit it execs the program itself,
// which becomes PID 1.
//
// Launcher.Park starts a helper ahead of time instead: it joins its
// cgroups, enters the root and drops the bounding set, then waits on a
// socket; Parked.Start sends it the program, its environment and stdio
// (SCM_RIGHTS), and it goes on as a freshly started one would.
//
// A helper that enters a root never copies the caller's mount table: it is
// cloned without CLONE_NEWNS and given its root as a detached mount tree
// (open_tree of Config.Root) and the Launcher's seed mount namespace, made
// once, whose root is an empty read-only tmpfs. It joins the seed, unshares a
// copy of that one mount, attaches the tree and pivots into it, so that
// its namespace costs the root's few mounts whatever the host has.
//
// The package owns that helper and the protocol with it. It never builds
// the root (fsbind does), never creates cgroups (the caller passes a v2
// directory fd, cgroup v1 cgroup.procs files the helper joins first thing,
// or attaches the helper itself through Config.Attach), and
// never creates network namespaces beyond the one a clone flag asks for.
//
// After editing csrc/sbinit.c, regenerate the embedded helper with
// `go generate` (needs gcc); TestHelperUpToDate fails when they drift apart.
package sbinit

//go:generate sh build.sh amd64
