package lean

import (
	"context"
	"syscall"
	"time"

	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/internal/pid1"
	"github.com/sockfaas/sockfaas/sandbox/internal/sbinit"
)

// Process is a process tree started in a lean sandbox. With a PID
// namespace the program is its PID 1, and the host PID is the program's;
// with ProcessSpec.Init the host PID is the sandbox's init helper, which
// forwards signals to the program and reports the program's status.
type Process struct {
	sb        *Sandbox
	p         *sbinit.Process
	oomBefore uint64
	pid1      bool         // the program is PID 1 of its namespace
	signals   pid1.Signals // for pid1: see Signal

	done   chan struct{}
	status sandbox.ExitStatus
	err    error
}

// Pid implements sandbox.Process.
func (p *Process) Pid() int { return p.p.Pid() }

// Signal implements sandbox.Process.
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil // already exited; nothing to signal
	default:
	}
	if p.pid1 {
		// The kernel drops what PID 1 does not handle.
		return p.signals.Send(p.Pid(), sig, p.p.Signal)
	}
	return p.p.Signal(sig)
}

// Wait implements sandbox.Process.
func (p *Process) Wait(ctx context.Context) (sandbox.ExitStatus, error) {
	select {
	case <-p.done:
		return p.status, p.err
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait runs once per process: it reaps it and decides the status. An OOM
// kill is read from the cgroup's counter, which the kernel bumps before the
// victim dies.
func (p *Process) wait() {
	defer close(p.done)
	ws, err := p.p.Wait()
	if err != nil {
		p.err = err
		return
	}
	p.status = exitStatus(ws)
	p.status.Signal = p.signals.Reported(p.status.Signal)
	if n, err := p.sb.cg.OOMKills(); err == nil && n > p.oomBefore {
		p.status.OOMKilled = true
	}
}

func exitStatus(ws syscall.WaitStatus) sandbox.ExitStatus {
	if ws.Signaled() {
		return sandbox.ExitStatus{Code: -1, Signal: ws.Signal()}
	}
	return sandbox.ExitStatus{Code: ws.ExitStatus()}
}

func durationNanos(n uint64) time.Duration { return time.Duration(n) }
