package libct

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/internal/mountinfo"
	"github.com/sockfaas/sockfaas/internal/statedir"
	"github.com/sockfaas/sockfaas/sandbox"
)

// The state directory's layout. libcontainer's own state ("containers") is
// the record of started containers; ours ("sandboxes") is written before
// anything else of a sandbox exists, so that Cleanup also finds sandboxes
// that were never started or were half built when the process died.
const (
	lockFile      = "lock"
	backendFile   = "backend.json"
	containersDir = "containers" // libcontainer's root
	recordsDir    = "sandboxes"  // <id>.json: a record per sandbox
	rootfsDir     = "rootfs"     // <id>: the sandboxes' root directories
	scratchDir    = "scratch"    // <id>: their scratch directories
	etcDir        = "etc"        // generated /etc shared by host-base roots
)

// record is what Cleanup needs to remove a sandbox without the process that
// made it.
type record struct {
	ID      string            `json:"id"`
	Cgroups map[string]string `json:"cgroups"` // controller -> absolute cgroup directory
	Rootfs  string            `json:"rootfs"`
	Scratch string            `json:"scratch"`
}

// backendRecord remembers the cgroup parent directories so that Cleanup can
// remove them once empty.
type backendRecord struct {
	CgroupParents []string `json:"cgroup_parents"`
}

func writeJSON(file string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

func readJSON(file string, v any) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// stateLock is an exclusive flock on <stateDir>/lock: one backend (or one
// Cleanup) per state directory at a time.
type stateLock struct{ f *os.File }

func lockState(dir string) (*stateLock, error) {
	f, err := statedir.Lock(dir)
	if errors.Is(err, statedir.ErrLocked) {
		return nil, fmt.Errorf("%w: %w", sandbox.ErrBusy, err)
	}
	if err != nil {
		return nil, err
	}
	return &stateLock{f: f}, nil
}

// removeDir drops the lock file and the (otherwise empty) state directory,
// then releases the lock: nothing is left behind.
func (l *stateLock) removeDir(dir string) {
	if l == nil || l.f == nil {
		return
	}
	statedir.Unlock(l.f)
	l.f = nil
	_ = os.Remove(dir) // only if empty
}

func (l *stateLock) release() {
	if l != nil && l.f != nil {
		l.f.Close() // drops the flock
		l.f = nil
	}
}

// Cleanup removes everything a backend using stateDir left behind, typically
// after a crash: it kills and destroys every container libcontainer recorded
// there, removes their cgroups, root and scratch directories, the generated
// /etc and the cgroup parent if it is empty. It fails with sandbox.ErrBusy
// while a live backend owns stateDir. A missing stateDir is not an error.
func Cleanup(ctx context.Context, stateDir string, log zerolog.Logger) error {
	if _, err := os.Stat(stateDir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	lk, err := lockState(stateDir)
	if err != nil {
		return err
	}
	if err := cleanupLocked(ctx, stateDir, log); err != nil {
		lk.release()
		return err
	}
	lk.removeDir(stateDir)
	return nil
}

func cleanupLocked(ctx context.Context, stateDir string, log zerolog.Logger) error {
	start := time.Now()
	var errs []error
	n := 0

	// Started containers: libcontainer knows their init process and kills
	// it (with its PID namespace) and removes cgroups and state.
	root := filepath.Join(stateDir, containersDir)
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		n++
		if err := destroyRecorded(ctx, root, e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("container %q: %w", e.Name(), err))
		}
	}

	// Our records cover what libcontainer may not know: sandboxes never
	// started, or half built.
	recs, _ := filepath.Glob(filepath.Join(stateDir, recordsDir, "*.json"))
	for _, f := range recs {
		var r record
		if err := readJSON(f, &r); err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", f, err))
			continue
		}
		if err := removeSandboxFiles(r); err != nil {
			errs = append(errs, fmt.Errorf("sandbox %q: %w", r.ID, err))
			continue
		}
		_ = os.Remove(f)
	}

	// Whatever remains under our directories is debris without a record.
	for _, d := range []string{rootfsDir, scratchDir, etcDir} {
		if err := removeTree(filepath.Join(stateDir, d)); err != nil {
			errs = append(errs, err)
		}
	}
	var br backendRecord
	if err := readJSON(filepath.Join(stateDir, backendFile), &br); err == nil {
		removeEmptyDirs(br.CgroupParents)
	}
	_ = os.Remove(filepath.Join(stateDir, backendFile))
	_ = os.Remove(filepath.Join(stateDir, containersDir))
	_ = os.Remove(filepath.Join(stateDir, recordsDir))

	ev := log.Info()
	if n == 0 && len(recs) == 0 {
		ev = log.Debug()
	}
	ev.Str("state", stateDir).Int("containers", n).Int("records", len(recs)).
		Dur("dur", time.Since(start)).Msg("libct cleanup")
	return errors.Join(errs...)
}

// destroyRecorded kills and destroys the container id that libcontainer
// recorded under root, without the process that started it.
func destroyRecorded(ctx context.Context, root, id string) error {
	c, err := libcontainer.Load(root, id)
	if err != nil {
		// Created but never started (no state.json yet), or unreadable: the
		// sandbox record has the cgroup paths.
		return os.RemoveAll(filepath.Join(root, id))
	}
	st, err := c.State()
	if err != nil {
		return err
	}
	// SIGKILL to the init of a PID namespace kills every process in it;
	// libcontainer also thaws a paused container for it.
	if err := c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		return err
	}
	if err := killCgroup(st.CgroupPaths, killTimeout); err != nil {
		return err
	}
	if err := waitStopped(ctx, c); err != nil {
		return err
	}
	return c.Destroy()
}

const killTimeout = 10 * time.Second

// waitStopped waits until the container's init is gone (reaped, or a zombie
// of a parent that died).
func waitStopped(ctx context.Context, c *libcontainer.Container) error {
	deadline := time.Now().Add(killTimeout)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		status, err := c.Status()
		if err != nil {
			return err
		}
		if status == libcontainer.Stopped {
			return nil
		}
		if status == libcontainer.Paused {
			_ = c.Resume()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container still %s after SIGKILL", status)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// removeSandboxFiles removes a sandbox's cgroups (killing what is left in
// them), root and scratch directories.
func removeSandboxFiles(r record) error {
	if err := killCgroup(r.Cgroups, killTimeout); err != nil {
		return err
	}
	if err := removeCgroups(r.Cgroups); err != nil {
		return err
	}
	for _, d := range []string{r.Rootfs, r.Scratch} {
		if err := removeTree(d); err != nil {
			return err
		}
	}
	return nil
}

// removeTree removes dir and everything below it, after detaching any mount
// found there (a mount would make RemoveAll delete through it into whatever
// it shows). The backend never mounts anything in the host's namespace, so
// finding one means something else went wrong.
func removeTree(dir string) error {
	if dir == "" {
		return nil
	}
	mounts, err := mountinfo.Under(dir)
	if err != nil {
		return err
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("refusing to remove %s: cannot detach the mount at %s: %w", dir, mounts[i], err)
		}
	}
	return os.RemoveAll(dir)
}
