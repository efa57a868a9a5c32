package sbinit

import (
	"io"
	"os"
)

// Config describes one program to start in new namespaces.
type Config struct {
	// Root is the host path of the sandbox root, a directory that is a
	// mount point with a proc directory in it. Requires CLONE_NEWNS. The
	// sandbox's mount namespace holds a copy of the mounts at and below
	// Root, taken at Start, and nothing else of the host's (unbindable
	// mounts below Root are left out; an unbindable Root fails).
	// "" runs the program in the host's root.
	Root string
	// Cloneflags: a subset of CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWIPC,
	// CLONE_NEWUTS, CLONE_NEWNET and CLONE_NEWCGROUP.
	Cloneflags uintptr
	// NoInit, with CLONE_NEWPID, makes the program PID 1 of the new
	// namespace, as runc and crun do, instead of the child of an init
	// helper that forwards signals to it and reaps orphans. The kernel
	// then drops signals from outside that the program does not handle
	// (package pid1 stands in for them), orphans are the program's to
	// reap, and the program's exit ends the namespace with one process
	// fewer in between. Process.Pid is the program's own.
	NoInit bool
	// Hostname is set when Cloneflags has CLONE_NEWUTS, ignored otherwise.
	Hostname string
	// UID and GID the program runs as, with no supplementary groups and no
	// capabilities (uid 0 included).
	UID, GID uint32
	// Dir is the working directory inside the root; "" means "/".
	Dir string
	// Args is the program's argv. Args[0] without a '/' is looked up in
	// PATH from Env, or else in /usr/local/bin:/usr/bin:/bin.
	Args []string
	// Env is the program's whole environment; nil means an empty one (the
	// host's environment never leaks in).
	Env []string
	// Stdin, Stdout and Stderr work as in os/exec: nil is /dev/null, an
	// *os.File is passed as is, anything else goes through a pipe that
	// Process.Wait drains.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// CgroupFD, if >= 0, is an open cgroup v2 directory the helper is born
	// into (clone3 CLONE_INTO_CGROUP). -1 means none. Note the zero Config
	// has 0 here, which is a descriptor: set -1 explicitly.
	CgroupFD int
	// NetNS, if not nil, is an open network namespace (an nsfs file, e.g.
	// /proc/PID/ns/net or a bind mount of one) the program joins instead of
	// creating one: the cheap way to give sandboxes a pre-built network.
	// It cannot be combined with CLONE_NEWNET.
	NetNS *os.File
	// Privileged keeps the helper's uid 0 and every capability, and sets no
	// no_new_privs: for trusted processes that must set up sandboxes
	// themselves (a zygote forks children that enter other sandboxes).
	// UID and GID are ignored. Never for user code.
	Privileged bool
	// Attach, if not nil, runs once the helper exists and before it does
	// anything, with its host pid: for cgroup v1, write pid to the
	// cgroup.procs files. An error aborts the start.
	Attach func(pid int) error
	// CgroupProcs are cgroup.procs files (cgroup v1, one per hierarchy)
	// open for writing, at most MaxCgroupProcs: the helper joins them
	// itself, writing "0" to each before it does anything else. That
	// saves Attach's round trip between the Go side and the helper. The
	// caller keeps its files; the helper's copies are closed before the
	// program runs.
	CgroupProcs []*os.File
}

// StepError reports a setup step of the helper that failed before the
// program ran: "sandbox init: pivot_root: invalid argument",
// `sandbox init: exec "nosuch": no such file or directory`. Err is usually
// a syscall.Errno, so errors.Is(err, fs.ErrNotExist) and the like work.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return "sandbox init: " + e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }
