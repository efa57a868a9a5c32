// Package statedir gives a process exclusive ownership of a state
// directory: an flock on <dir>/lock that the kernel drops when the owner
// dies. That is how the next process knows whether what it finds in the
// directory belongs to a live owner or is a crashed one's debris.
package statedir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// LockName is the lock file inside a state directory.
const LockName = "lock"

// ErrLocked means another live process owns the directory. Packages wrap
// it with their own ErrBusy.
var ErrLocked = errors.New("state directory is owned by another live process")

// Lock makes dir (mode 0700) if needed and takes its lock without waiting.
// Closing the returned file releases it.
func Lock(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, LockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == nil:
		return f, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		f.Close()
		return nil, fmt.Errorf("%s: %w", dir, ErrLocked)
	default:
		f.Close()
		return nil, fmt.Errorf("lock state directory %s: %w", dir, os.NewSyscallError("flock", err))
	}
}
