package peers

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	cgroupRoot    = "/sys/fs/cgroup"
	cgroupUnified = "/sys/fs/cgroup/unified"
)

// cgroupLayoutHybrid reports whether the host mounts cgroup v1 hierarchies
// under a tmpfs at /sys/fs/cgroup together with a cgroup2 at
// /sys/fs/cgroup/unified: the layout crun 1.8.1 classifies as hybrid and
// refuses.
func cgroupLayoutHybrid() bool {
	var st unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		return false
	}
	if err := unix.Statfs(cgroupUnified, &st); err != nil {
		return false
	}
	return st.Type == unix.CGROUP2_SUPER_MAGIC
}

// cgroupV1View is an OS thread whose mount namespace is a private copy of
// the host's with /sys/fs/cgroup/unified unmounted; processes started from
// it see a plain cgroup v1 layout. That is how crun runs on a hybrid host.
//
// Why a thread: the unmount must happen in a namespace the runtime's
// process starts in, and Go offers no hook between fork and exec (Unshareflags
// gives the namespace but not the unmount). Shelling out
// (`unshare -m sh -c 'umount ... && exec crun ...'`) costs three extra
// execs per run. A thread can unshare its own mount namespace even in a
// multithreaded process (the kernel gives it its own fs_struct), and
// os/exec forks from the calling thread, so a child started there inherits
// the copy. The namespace is made once (≈0.15 ms); each start is then a
// hand-off to that thread, ≈0.1–0.15 ms more than a plain fork+exec here,
// mostly the cost of waking it, against ≈1–1.3 ms for `unshare -m` alone and
// ≈3.3 ms for unshare+sh+umount (BenchmarkHybridWorkaround).
//
// The copy is a slave of the host's mounts: on a host with shared mounts,
// mounts and unmounts made there later reach it. On a host whose mounts are
// private (this one), it keeps the mounts present when it started, even ones
// the host unmounts later, until Close; bundles live on filesystems mounted
// long before, so runs are unaffected.
type cgroupV1View struct {
	mu     sync.RWMutex // held shared while sending to reqs, exclusively to close it
	closed bool
	reqs   chan startReq
}

type startReq struct {
	cmd  *exec.Cmd
	done chan error
}

func newCgroupV1View() (*cgroupV1View, error) {
	v := &cgroupV1View{reqs: make(chan startReq)}
	ready := make(chan error, 1)
	go offMainThread(func() { v.serve(ready) })
	if err := <-ready; err != nil {
		return nil, err
	}
	return v, nil
}

// serve runs locked to its thread and never unlocks it: the thread's
// namespace differs from the process's, so the Go runtime must discard the
// thread when serve returns rather than reuse it for other goroutines.
func (v *cgroupV1View) serve(ready chan<- error) {
	if err := enterCgroupV1MountNS(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for req := range v.reqs {
		req.done <- req.cmd.Start()
	}
}

// start starts cmd from the view's thread; the caller waits for it as usual.
func (v *cgroupV1View) start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	v.mu.RLock()
	if v.closed {
		v.mu.RUnlock()
		return errors.New("cgroup v1 view: closed")
	}
	v.reqs <- startReq{cmd: cmd, done: done}
	v.mu.RUnlock()
	return <-done
}

// close ends the thread once the starts already handed over are done.
func (v *cgroupV1View) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.closed {
		v.closed = true
		close(v.reqs)
	}
}

// enterCgroupV1MountNS gives the calling (locked) thread its own mount
// namespace without the cgroup2 mount.
func enterCgroupV1MountNS() error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	// Slave first, so the unmount stays in this namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make mounts slaves: %w", err)
	}
	if err := unix.Unmount(cgroupUnified, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", cgroupUnified, err)
	}
	return nil
}

// offMainThread runs f on a goroutine locked to a thread other than the
// process's main thread, and leaves that thread locked when f returns (so
// it is discarded). The main thread is the one /proc/self describes and the
// Go runtime never discards; a namespace change must not land there.
func offMainThread(f func()) {
	runtime.LockOSThread()
	if unix.Gettid() != unix.Getpid() {
		f()
		return
	}
	// Holding the main thread keeps the new goroutine off it.
	handoff := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		close(handoff)
		f()
	}()
	<-handoff
	runtime.UnlockOSThread()
}
