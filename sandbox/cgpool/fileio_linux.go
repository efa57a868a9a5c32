package cgpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupfs files are read and written with bare syscalls: one open, one
// read or write, one close, no buffering and no allocation beyond the
// result. The kernel parses each write(2) on its own, so a value must go in
// one write. Errors name the file: "write <path>: <errno>".

func openFile(p string, flags int) (int, error) {
	for {
		fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: p, Err: err}
		}
		return fd, nil
	}
}

// writeFile writes s to the cgroupfs file p.
func writeFile(p, s string) error {
	fd, err := openFile(p, unix.O_WRONLY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return writeFD(fd, p, s)
}

func writeFD(fd int, p, s string) error {
	b := []byte(s)
	for {
		_, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "write", Path: p, Err: err}
		}
		return nil
	}
}

// readFile returns the content of the cgroupfs file p, read into buf when
// it fits.
func readFile(p string, buf []byte) ([]byte, error) {
	fd, err := openFile(p, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return readFD(fd, p, buf, false)
}

// readFD reads fd to EOF; with fromStart it reads from offset 0 (pread),
// so the same fd can be read again.
func readFD(fd int, p string, buf []byte, fromStart bool) ([]byte, error) {
	if cap(buf) == 0 {
		buf = make([]byte, 0, 512)
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		var n int
		var err error
		if fromStart {
			n, err = unix.Pread(fd, buf[len(buf):cap(buf)], int64(len(buf)))
		} else {
			n, err = unix.Read(fd, buf[len(buf):cap(buf)])
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: p, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// readUint reads a file holding one unsigned number.
func readUint(p string) (uint64, error) {
	var a [64]byte
	b, err := readFile(p, a[:0])
	if err != nil {
		return 0, err
	}
	return parseUint(p, bytes.TrimSpace(b))
}

func parseUint(p string, b []byte) (uint64, error) {
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", p, err)
	}
	return n, nil
}

// readKeyed reads a flat-keyed file ("key value" per line: memory.events,
// memory.oom_control, cpu.stat, cgroup.events) and returns the value of
// key, or 0 when the key is absent.
func readKeyed(p, key string) (uint64, error) {
	var a [512]byte
	b, err := readFile(p, a[:0])
	if err != nil {
		return 0, err
	}
	return keyedValue(p, b, key)
}

func keyedValue(p string, b []byte, key string) (uint64, error) {
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(bytes.TrimSuffix(line, []byte{'\n'}), []byte{' '})
		if ok && string(k) == key {
			return parseUint(p, bytes.TrimSpace(v))
		}
	}
	return 0, nil
}

// readPids parses a cgroup.procs file; pids is appended to.
func readPids(p string, pids []int) ([]int, error) {
	var a [256]byte
	b, err := readFile(p, a[:0])
	if err != nil {
		return pids, err
	}
	for line := range bytes.Lines(b) {
		line = bytes.TrimSuffix(line, []byte{'\n'})
		if len(line) == 0 {
			continue
		}
		pid, err := strconv.Atoi(string(line))
		if err != nil {
			return pids, fmt.Errorf("parse %s: %w", p, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// isEmpty reports whether every cgroup.procs file in procs is empty.
func isEmpty(procs []string) (bool, error) {
	var a [16]byte
	for _, p := range procs {
		b, err := readFile(p, a[:0])
		if err != nil {
			return false, err
		}
		if len(bytes.TrimSpace(b)) > 0 {
			return false, nil
		}
	}
	return true, nil
}

func exists(p string) bool {
	return unix.Access(p, unix.F_OK) == nil
}

// rmdir removes an empty cgroup directory; a missing one is fine. A cgroup
// whose last task has just died can still be busy for a moment, so EBUSY
// is retried until ctx is done.
func rmdir(ctx context.Context, p string) error {
	err := poll(ctx, func() (bool, error) {
		err := unix.Rmdir(p)
		switch {
		case err == nil, err == unix.ENOENT:
			return true, nil
		case err == unix.EBUSY, err == unix.EINTR:
			return false, nil
		default:
			return false, &os.PathError{Op: "rmdir", Path: p, Err: err}
		}
	})
	if err != nil && !errors.As(err, new(*os.PathError)) {
		return fmt.Errorf("rmdir %s: %w", p, err)
	}
	return err
}

// poll calls done until it reports true, sleeping a little longer each
// time (20µs up to 1ms), until ctx is done.
func poll(ctx context.Context, done func() (bool, error)) error {
	const maxSleep = time.Millisecond
	sleep := 20 * time.Microsecond
	var t *time.Timer
	for {
		ok, err := done()
		if err != nil || ok {
			if t != nil {
				t.Stop()
			}
			return err
		}
		if t == nil {
			t = time.NewTimer(sleep)
		} else {
			t.Reset(sleep)
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
		if sleep *= 2; sleep > maxSleep {
			sleep = maxSleep
		}
	}
}
