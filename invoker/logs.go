package invoker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// DefaultLogMaxBytes is the size at which a function's log file is rotated:
// <name>.log becomes <name>.log.1 (replacing the previous one) and a new
// <name>.log is started. So a function's logs take at most about twice
// this on disk.
const DefaultLogMaxBytes = 1 << 20

// logs keeps one log file per function, shared by its instances.
//
// Instances do not write the file themselves: they get the write end of a
// pipe, and a goroutine per function copies from the pipe into the file.
// That is what lets the file be capped and rotated while instances hold
// their descriptor for as long as they live.
type logs struct {
	dir string
	max int64
	log zerolog.Logger

	mu     sync.Mutex
	funcs  map[string]*funcLog
	live   map[*funcLog]bool // copiers running, dropped functions' included
	closed bool
	wg     sync.WaitGroup
}

type funcLog struct {
	path string
	w    *os.File // handed to instances (they get their own copy)
	r    *os.File

	mu   sync.Mutex // guards f and size against Logs' reads
	f    *os.File
	size int64

	dropped bool // the function was removed: delete the files when done (guarded by logs.mu)
}

func newLogs(dir string, max int64, log zerolog.Logger) (*logs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	return &logs{dir: dir, max: max, log: log, funcs: map[string]*funcLog{}, live: map[*funcLog]bool{}}, nil
}

// writer returns the write end of name's log pipe, for an instance's
// stdout and stderr. It stays open until drop or close; the caller must not
// close it.
func (l *logs) writer(name string) (*os.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if fl := l.funcs[name]; fl != nil {
		return fl.w, nil
	}
	fl := &funcLog{path: filepath.Join(l.dir, name+".log")}
	f, err := os.OpenFile(fl.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log of %q: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("log of %q: %w", name, err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("log of %q: %w", name, err)
	}
	fl.f, fl.size, fl.r, fl.w = f, fi.Size(), r, w
	l.funcs[name] = fl
	l.live[fl] = true
	l.wg.Add(1)
	go l.copy(name, fl)
	return w, nil
}

// copy moves what instances write into the file until every write end is
// closed (or the read end is, by close).
func (l *logs) copy(name string, fl *funcLog) {
	defer l.wg.Done()
	defer func() {
		fl.r.Close()
		l.mu.Lock()
		delete(l.live, fl)
		// A removed function's log goes with its last instance, unless the
		// name was deployed again meanwhile (its new log has the same path).
		if fl.dropped && l.funcs[name] == nil {
			_ = os.Remove(fl.path)
			_ = os.Remove(fl.path + ".1")
		}
		l.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := fl.r.Read(buf)
		if n > 0 {
			fl.mu.Lock()
			werr := fl.writeLocked(buf[:n], l.max)
			fl.mu.Unlock()
			if werr != nil {
				l.log.Warn().Err(werr).Str("func", name).Msg("writing the function's log")
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				l.log.Warn().Err(err).Str("func", name).Msg("reading the function's output")
			}
			fl.mu.Lock()
			if fl.f != nil {
				fl.f.Close()
				fl.f = nil
			}
			fl.mu.Unlock()
			return
		}
	}
}

// writeLocked appends p, rotating whenever the file would pass max. A
// chunk is split at a line end that fits when there is one, so lines stay
// whole across a rotation unless a single line is longer than max.
func (fl *funcLog) writeLocked(p []byte, max int64) error {
	for len(p) > 0 {
		if fl.f == nil {
			return nil
		}
		room := max - fl.size
		n := int64(len(p))
		if n > room {
			n = 0
			if room > 0 {
				n = int64(bytes.LastIndexByte(p[:room], '\n') + 1)
			}
			if n == 0 && fl.size == 0 {
				n = room // one line longer than the cap: cut it
			}
		}
		if n == 0 {
			if err := fl.rotateLocked(); err != nil {
				return err
			}
			continue
		}
		w, err := fl.f.Write(p[:n])
		fl.size += int64(w)
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

func (fl *funcLog) rotateLocked() error {
	fl.f.Close()
	fl.f = nil
	if err := os.Rename(fl.path, fl.path+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(fl.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	fl.f, fl.size = f, 0
	return nil
}

// drop stops collecting name's output: once its instances are gone the
// copier sees the end of the pipe, closes the file and deletes it (a
// removed function's logs must not pile up in the state directory, which
// is often in memory).
func (l *logs) drop(name string) {
	l.mu.Lock()
	fl := l.funcs[name]
	delete(l.funcs, name)
	if fl != nil {
		fl.dropped = true
	}
	l.mu.Unlock()
	if fl != nil {
		fl.w.Close()
	}
}

// tail returns up to max bytes of the end of name's log, reaching into the
// rotated file when the current one is shorter.
func (l *logs) tail(name string, max int) ([]byte, error) {
	if max <= 0 {
		return []byte{}, nil
	}
	path := filepath.Join(l.dir, name+".log")
	l.mu.Lock()
	fl := l.funcs[name]
	l.mu.Unlock()
	if fl != nil {
		// Not in the middle of a rotation.
		fl.mu.Lock()
		defer fl.mu.Unlock()
	}
	cur, err := readTail(path, max)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	curMissing := err != nil
	if len(cur) < max {
		old, err := readTail(path+".1", max-len(cur))
		switch {
		case err == nil:
			cur = append(old, cur...)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		case curMissing:
			return nil, fmt.Errorf("logs of %q: %w", name, ErrNotFound)
		}
	}
	return cur, nil
}

func readTail(path string, max int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := fi.Size() - int64(max)
	if off < 0 {
		off = 0
	}
	buf := make([]byte, fi.Size()-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:n], nil
}

// close stops every copier (closing the read ends, so instances still
// holding a write end do not keep them running) and closes the files.
func (l *logs) close() {
	l.mu.Lock()
	l.closed = true
	funcs := l.funcs
	l.funcs = map[string]*funcLog{}
	l.mu.Unlock()
	for _, fl := range funcs {
		fl.w.Close()
	}
	// Instances are normally gone by now, so the copiers see EOF after
	// draining what was left. One still holding a write end must not keep
	// a copier running: after a grace period the read ends are closed.
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(logDrainGrace):
		l.mu.Lock()
		for fl := range l.live {
			fl.r.Close()
		}
		l.mu.Unlock()
		<-done
	}
}

// logDrainGrace bounds how long close waits for instances' output.
const logDrainGrace = 2 * time.Second
