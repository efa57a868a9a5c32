package zygote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
)

var _ sandbox.Process = (*Instance)(nil)

// Instance is a process a zygote forked into a sandbox. It implements
// sandbox.Process: Pid is its host pid, Signal signals it directly (through
// a pidfd, so a recycled pid is never hit), and Wait reports the exit the
// zygote saw when it reaped it, with OOMKilled read from the sandbox's
// cgroup like the lean backend does.
//
// If the zygote dies first, the exit status is lost: Wait then waits for
// the process itself to end and reports an error wrapping ErrZygote.
type Instance struct {
	pid       int
	pidMu     sync.Mutex
	pidfd     int // -1 once closed
	conn      *net.UnixConn
	sb        *lean.Sandbox
	oomBefore uint64

	closeOnce sync.Once
	// afterExit runs once the exit is known, before Wait returns (the
	// backend drains stdio pipes there).
	afterExit func()

	done   chan struct{}
	status sandbox.ExitStatus
	err    error
}

// newInstance: fd is a pidfd for pid, or -1 when the process is gone
// already (the exit message is on its way).
func newInstance(pid, fd int, conn *net.UnixConn, sb *lean.Sandbox, oomBefore uint64) *Instance {
	return &Instance{pid: pid, pidfd: fd, conn: conn, sb: sb, oomBefore: oomBefore, done: make(chan struct{})}
}

// Pid implements sandbox.Process.
func (i *Instance) Pid() int { return i.pid }

// Signal implements sandbox.Process. Signalling an exited instance is not
// an error.
func (i *Instance) Signal(sig syscall.Signal) error {
	select {
	case <-i.done:
		return nil
	default:
	}
	var err error
	i.pidMu.Lock()
	if i.pidfd >= 0 {
		err = unix.PidfdSendSignal(i.pidfd, sig, nil, 0)
	}
	// Without a pidfd the process is gone: never signal by number, which
	// may have been reused by now.
	i.pidMu.Unlock()
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signal pid %d: %w", i.pid, err)
	}
	return nil
}

// Wait implements sandbox.Process.
func (i *Instance) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-i.done:
		return i.status, i.err
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

// Done is closed once the instance has exited (and Wait would not block).
func (i *Instance) Done() <-chan struct{} { return i.done }

// Close closes the connection to the zygote, which kills the instance if it
// still runs. Wait then reports its end.
func (i *Instance) Close() error {
	i.closeOnce.Do(func() { _ = i.conn.CloseWrite() })
	return nil
}

// watch waits for the zygote's exit message.
func (i *Instance) watch() {
	defer close(i.done)
	defer func() {
		if i.afterExit != nil {
			i.afterExit()
		}
	}()
	defer i.conn.Close()
	buf := make([]byte, 4096)
	for {
		n, err := i.conn.Read(buf)
		if err != nil || n == 0 {
			i.lost()
			return
		}
		var r reply
		if json.Unmarshal(buf[:n], &r) != nil || r.Op != "exit" || r.Status == nil {
			continue
		}
		i.status = exitStatus(syscall.WaitStatus(*r.Status))
		if st, err := i.sb.Stats(context.Background()); err == nil && st.OOMKills > i.oomBefore {
			i.status.OOMKilled = true
		}
		i.closePidfd()
		return
	}
}

// lost handles a zygote that went away before reporting the exit: wait for
// the process to end, then say the status is unknown.
func (i *Instance) lost() {
	i.pidMu.Lock()
	fd := i.pidfd
	i.pidMu.Unlock()
	if fd >= 0 {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); !errors.Is(err, unix.EINTR) {
				break
			}
		}
		i.closePidfd()
	}
	i.status = sandbox.ExitStatus{Code: -1}
	i.err = fmt.Errorf("pid %d: exit status lost with its zygote: %w", i.pid, ErrZygote)
}

func (i *Instance) closePidfd() {
	i.pidMu.Lock()
	if i.pidfd >= 0 {
		unix.Close(i.pidfd)
		i.pidfd = -1
	}
	i.pidMu.Unlock()
}

func exitStatus(ws syscall.WaitStatus) sandbox.ExitStatus {
	if ws.Signaled() {
		return sandbox.ExitStatus{Code: -1, Signal: ws.Signal()}
	}
	return sandbox.ExitStatus{Code: ws.ExitStatus()}
}
