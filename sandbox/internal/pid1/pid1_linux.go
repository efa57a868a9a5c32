// Package pid1 makes signals to a program that is PID 1 of its own PID
// namespace act as they would on any other process. The kernel drops a
// signal sent to a namespace's init from outside unless the init handles it
// (SIGKILL and SIGSTOP excepted), so SIGTERM would not stop a program that
// never installed a handler for it. Signals.Send looks at the program's
// signal dispositions first and stands in for the default action: SIGKILL
// for a terminating signal, SIGSTOP for a stopping one, nothing for one
// ignored by default; Signals.Reported then reports the signal the caller
// sent, not the SIGKILL that stood in for it. runc and crun leave this to
// the caller; the sandbox backends promise signals that act as usual.
package pid1

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Signals tracks the signals sent to one PID 1 program. The zero value is
// ready to use.
type Signals struct {
	mu       sync.Mutex
	emulated syscall.Signal // the signal a SIGKILL stood in for
}

// Send delivers sig to pid, a PID namespace's init, through send (which
// signals that process, e.g. os.Process.Signal): as is if the program
// handles it (or its dispositions cannot be read), not at all if it
// ignores it, else as its default action would act.
func (s *Signals) Send(pid int, sig syscall.Signal, send func(syscall.Signal) error) error {
	if sig == 0 || sig == unix.SIGKILL || sig == unix.SIGSTOP || sig == unix.SIGCONT {
		return send(sig)
	}
	caught, ignored, err := masks(pid)
	bit := uint64(1) << (uint(sig) - 1)
	switch {
	case err != nil || caught&bit != 0:
		return send(sig)
	case ignored&bit != 0:
		return nil
	}
	switch sig {
	case unix.SIGCHLD, unix.SIGURG, unix.SIGWINCH: // ignored by default
		return nil
	case unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU: // stop by default
		return send(unix.SIGSTOP)
	}
	// Terminate (or dump core) by default.
	s.mu.Lock()
	s.emulated = sig
	s.mu.Unlock()
	return send(unix.SIGKILL)
}

// Reported is the signal to report for a program killed by got: the one a
// SIGKILL stood in for, if it did.
func (s *Signals) Reported(got syscall.Signal) syscall.Signal {
	s.mu.Lock()
	defer s.mu.Unlock()
	if got == unix.SIGKILL && s.emulated != 0 {
		return s.emulated
	}
	return got
}

// masks reads the caught and ignored signal masks of pid.
func masks(pid int) (caught, ignored uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	var gotC, gotI bool
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *uint64
		switch string(k) {
		case "SigCgt":
			dst, gotC = &caught, true
		case "SigIgn":
			dst, gotI = &ignored, true
		default:
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 16, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s of pid %d: %w", k, pid, err)
		}
		*dst = n
	}
	if !gotC || !gotI {
		return 0, 0, errors.New("no signal masks in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return caught, ignored, nil
}
