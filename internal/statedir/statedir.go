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
	f, err := LockFile(filepath.Join(dir, LockName))
	if errors.Is(err, ErrLocked) {
		return nil, fmt.Errorf("%s: %w", dir, ErrLocked)
	}
	return f, err
}

// LockFile takes an exclusive flock on path (created if missing) without
// waiting. The owner may remove path before closing the file (Unlock): a
// process that opened the old file in between notices that its lock is on
// a file no longer at path and tries again.
func LockFile(path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock file: %w", err)
		}
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err != unix.EINTR {
				break
			}
		}
		switch {
		case errors.Is(err, unix.EWOULDBLOCK):
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, ErrLocked)
		case err != nil:
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, os.NewSyscallError("flock", err))
		}
		var held, now unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &now) == nil &&
			held.Ino == now.Ino && held.Dev == now.Dev {
			return f, nil
		}
		f.Close() // removed or replaced while we waited: take the new one
	}
}

// Unlock removes the lock file and releases the lock.
func Unlock(f *os.File) {
	if f == nil {
		return
	}
	_ = os.Remove(f.Name())
	f.Close()
}
