package peers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The package's errors, checked with errors.Is. (Its own, rather than the
// sandbox package's: the harness helper should not depend on a backend.)
var (
	// ErrNotInstalled: the runtime's binary is not on PATH. The wrapping
	// error says which package provides it.
	ErrNotInstalled = errors.New("runtime not installed")
	// ErrInvalid: a malformed request (container id, command, cgroup
	// parent); nothing was changed.
	ErrInvalid = errors.New("invalid argument")
)

// deleteTimeout bounds the `delete -f` that follows a run, even when the
// run's own context has already been cancelled: a container must not outlive
// its Run call.
const deleteTimeout = 10 * time.Second

// Runtime is an OCI runtime CLI. The zero value is not usable: get one from
// Find. A Runtime is safe for concurrent use; Close releases what it holds.
type Runtime struct {
	// Name is the binary's base name ("crun", "runc"); it also names the
	// runtime's state directory inside a bundle.
	Name string
	// Path is where the binary was found.
	Path string

	// hybrid is set for crun on a hybrid cgroup layout: crun must then be
	// started from view, never directly.
	hybrid bool

	mu   sync.Mutex
	view *cgroupV1View // started on first use when hybrid
}

// Find looks the runtime up on PATH. name is a binary name such as "crun" or
// "runc" (or a path to one). The error wraps ErrNotInstalled when it is
// missing, with the command that installs it.
func Find(name string) (*Runtime, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		base := filepath.Base(name)
		return nil, fmt.Errorf("find %s: %w (install it with: apt-get install %s)", name, ErrNotInstalled, base)
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("find %s: %w", name, err)
	}
	r := &Runtime{Name: filepath.Base(path), Path: path}
	// crun 1.8.1 supports v1 and v2 but not the two mounted together.
	r.hybrid = r.Name == "crun" && cgroupLayoutHybrid()
	return r, nil
}

// HybridWorkaround reports whether r is started from a mount namespace
// without the cgroup2 mount (crun on a hybrid cgroup layout).
func (r *Runtime) HybridWorkaround() bool { return r.hybrid }

// Close stops the helper thread of the hybrid-layout workaround, if one was
// started; runs still starting on it fail. A later Run starts a new one.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.view != nil {
		r.view.close()
		r.view = nil
	}
	return nil
}

// StateDir is the --root directory r keeps b's container state in.
func (r *Runtime) StateDir(b *Bundle) string {
	return filepath.Join(b.Dir, "state", r.Name)
}

// Run runs args as a container named id in b and waits for it to exit:
// `<runtime> --root <state> run --bundle <dir> <id>`. The container's
// stdout and stderr go to the given writers (nil discards). Whatever happens,
// the container is gone when Run returns: if the runtime left its state
// behind (a failure, a cancelled ctx), Run deletes it with `delete -f`.
//
// A non-zero exit, of the command or of the runtime itself, is an error that
// wraps *exec.ExitError and carries the tail of the runtime's stderr. ids must
// be unique among concurrent runs on the same bundle (they name the cgroup).
func (r *Runtime) Run(ctx context.Context, b *Bundle, id string, args []string, stdout, stderr io.Writer) error {
	if err := validID(id); err != nil {
		return fmt.Errorf("%s run: %w", r.Name, err)
	}
	if len(args) == 0 {
		return fmt.Errorf("%s run %s: no command: %w", r.Name, id, ErrInvalid)
	}
	dir, err := b.prepareRun(id, args)
	if err != nil {
		return fmt.Errorf("%s run %s: %w", r.Name, id, err)
	}
	gone := false
	defer func() { b.finishRun(dir, gone) }()
	state := r.StateDir(b)

	var errTail tailBuffer
	cmd := r.command(ctx, state, "run", "--bundle", dir, id)
	cmd.Stdout = stdout
	if stderr != nil {
		cmd.Stderr = io.MultiWriter(stderr, &errTail)
	} else {
		cmd.Stderr = &errTail
	}
	// On cancellation, killing the runtime is not enough: the container
	// outlives it and holds the output pipes open. Kill the runtime first
	// (so it does not race to delete the container itself), then delete.
	cmd.Cancel = func() error {
		_ = cmd.Process.Kill()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
		defer cancel()
		return r.forceDelete(dctx, state, id)
	}
	cmd.WaitDelay = time.Second
	runErr := r.startAndWait(cmd)

	// On a normal exit the runtime has already destroyed the container;
	// a stat is much cheaper than a second runtime invocation.
	gone = true
	if _, err := os.Lstat(filepath.Join(state, id)); err == nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
		defer cancel()
		if err := r.forceDelete(dctx, state, id); err != nil {
			runErr = errors.Join(runErr, err)
			gone = false
		}
	}
	if runErr != nil {
		return fmt.Errorf("%s run %s %q: %w%s", r.Name, id, args, runErr, errTail.suffix())
	}
	return nil
}

// List returns the ids of the containers r has state for in b
// (`<runtime> --root <state> list -q`).
func (r *Runtime) List(ctx context.Context, b *Bundle) ([]string, error) {
	return r.list(ctx, r.StateDir(b))
}

func (r *Runtime) list(ctx context.Context, state string) ([]string, error) {
	if _, err := os.Stat(state); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out bytes.Buffer
	var errTail tailBuffer
	cmd := r.command(ctx, state, "list", "-q")
	cmd.Stdout, cmd.Stderr = &out, &errTail
	if err := r.startAndWait(cmd); err != nil {
		return nil, fmt.Errorf("%s list in %s: %w%s", r.Name, state, err, errTail.suffix())
	}
	var ids []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if id := strings.TrimSpace(sc.Text()); id != "" {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// forceDelete kills and deletes container id (`delete -f`).
func (r *Runtime) forceDelete(ctx context.Context, state, id string) error {
	var errTail tailBuffer
	cmd := r.command(ctx, state, "delete", "-f", id)
	cmd.Stderr = &errTail
	if err := r.startAndWait(cmd); err != nil {
		// A foreground `run` of the same container may have deleted it
		// while delete was at work: gone is what was asked for.
		if _, serr := os.Lstat(filepath.Join(state, id)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("%s delete -f %s: %w%s", r.Name, id, err, errTail.suffix())
	}
	return nil
}

func (r *Runtime) command(ctx context.Context, state string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, r.Path, append([]string{"--root", state}, args...)...)
}

// startAndWait starts cmd, from the workaround's mount namespace when r
// needs it, and waits for it.
func (r *Runtime) startAndWait(cmd *exec.Cmd) error {
	if !r.hybrid {
		return cmd.Run()
	}
	view, err := r.cgroupView()
	if err != nil {
		return err
	}
	if err := view.start(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

func (r *Runtime) cgroupView() (*cgroupV1View, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.view == nil {
		v, err := newCgroupV1View()
		if err != nil {
			return nil, fmt.Errorf("%s: hybrid cgroup workaround: %w", r.Name, err)
		}
		r.view = v
	}
	return r.view, nil
}

// validID accepts the ids both runtimes accept and that are safe as a path
// element: letters, digits, '_', '-', '.', not starting with '.'.
func validID(id string) error {
	if id == "" || len(id) > 128 || id[0] == '.' {
		return fmt.Errorf("container id %q: %w", id, ErrInvalid)
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
		if !ok {
			return fmt.Errorf("container id %q: %w", id, ErrInvalid)
		}
	}
	return nil
}

// tailBuffer keeps the last tailMax bytes written to it: enough of a
// runtime's stderr to explain a failure without holding a chatty one.
type tailBuffer struct{ b []byte }

const tailMax = 4 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= tailMax {
		p = p[len(p)-tailMax:]
		t.b = t.b[:0]
	}
	if over := len(t.b) + len(p) - tailMax; over > 0 {
		t.b = t.b[over:]
	}
	t.b = append(t.b, p...)
	return n, nil
}

// suffix formats the kept bytes for the end of an error message.
func (t *tailBuffer) suffix() string {
	s := strings.TrimSpace(string(t.b))
	if s == "" {
		return ""
	}
	return ": stderr: " + s
}
