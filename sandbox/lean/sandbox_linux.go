package lean

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/cgpool"
	"github.com/sockfaas/sockfaas/sandbox/internal/sbinit"
)

var (
	_ sandbox.Sandbox = (*Sandbox)(nil)
	_ sandbox.Process = (*Process)(nil)
)

// defaultEnv is what a process gets when ProcessSpec.Env is nil.
var defaultEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"}

// Sandbox is a lean sandbox. Its namespaces are made by the first process
// started in it and live as long as that process tree; a later Start after
// the tree has exited makes fresh ones.
type Sandbox struct {
	b    *Backend
	id   string
	spec sandbox.Spec
	root *fsbind.Root
	cg   *cgpool.Cgroup

	mu     sync.Mutex
	parked *sbinit.Parked // a helper parked in root, until the first Start
	proc   *Process       // the running process tree, if any
	pids   []int
	// outsiders: a process from outside the sandbox's PID namespace may
	// be in its cgroup (OpenCgroupProcs, Adopt, a privileged start), so
	// Destroy cannot rely on the namespace's end to empty the cgroup.
	outsiders  bool
	paused     bool
	destroyed  bool
	gone       chan struct{} // closed when Destroy has finished
	destroyErr error
}

// ID implements sandbox.Sandbox.
func (s *Sandbox) ID() string { return s.id }

// Scratch is the host path of the sandbox's writable scratch directory,
// which the sandbox sees as fsbind.ScratchDir.
func (s *Sandbox) Scratch() string { return s.root.Scratch }

// Info implements sandbox.Sandbox.
func (s *Sandbox) Info() sandbox.Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.destroyed {
		// The root and cgroup are back in their pools, or other
		// sandboxes' by now.
		return sandbox.Info{ID: s.id, Backend: "lean"}
	}
	return sandbox.Info{
		ID:      s.id,
		Backend: "lean",
		Root:    s.root.Path,
		Cgroups: s.cg.Paths(),
		Pids:    append([]int(nil), s.pids...),
	}
}

// cloneflags are the clone flags that make the namespaces ns.
func cloneflags(ns sandbox.Namespaces) uintptr {
	var f uintptr
	if ns.Has(sandbox.NSMount) {
		f |= unix.CLONE_NEWNS
	}
	if ns.Has(sandbox.NSPID) {
		f |= unix.CLONE_NEWPID
	}
	if ns.Has(sandbox.NSIPC) {
		f |= unix.CLONE_NEWIPC
	}
	if ns.Has(sandbox.NSUTS) {
		f |= unix.CLONE_NEWUTS
	}
	if ns.Has(sandbox.NSNet) {
		f |= unix.CLONE_NEWNET
	}
	return f
}

// Start implements sandbox.Sandbox. The lean backend runs one process tree
// at a time: while one runs, Start returns ErrUnsupported (start further
// processes from inside the sandbox instead).
func (s *Sandbox) Start(ctx context.Context, p sandbox.ProcessSpec) (sandbox.Process, error) {
	return s.start(ctx, p, false)
}

// StartPrivileged is Start for trusted system processes, a zygote above
// all: the process runs as uid 0 with every capability and without
// no_new_privs (ProcessSpec.User is ignored), still in the sandbox's root,
// namespaces and cgroup. It needs those rights to put its children into
// other sandboxes. Never run user code with it.
func (s *Sandbox) StartPrivileged(ctx context.Context, p sandbox.ProcessSpec) (sandbox.Process, error) {
	return s.start(ctx, p, true)
}

// CloneRoot returns a detached copy of the sandbox's whole root mount tree
// (open_tree with OPEN_TREE_CLONE), for a process in another mount
// namespace to attach with move_mount and pivot into. The caller closes it;
// the copy's mounts go away with the last namespace or fd that holds them.
func (s *Sandbox) CloneRoot() (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked("clone root"); err != nil {
		return nil, err
	}
	// Whoever attaches the copy can change the root's filesystems beyond
	// what Release checks.
	s.root.Taint()
	s.dropParkedLocked()
	return s.root.Clone()
}

// OpenCgroupProcs opens the sandbox's cgroup.procs files (one per cgroup
// v1 hierarchy, one on v2) for writing: a process that writes "0" to each
// joins the sandbox's cgroup. The caller closes them.
func (s *Sandbox) OpenCgroupProcs() ([]*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked("open cgroup"); err != nil {
		return nil, err
	}
	s.outsiders = true
	return s.cg.OpenProcs()
}

// Bind mounts source read-only at dest, one of the sandbox's
// Spec.Root.MountPoints, after the sandbox was created: a cached, generic
// sandbox gets a function's code this way. Processes started (or forked
// into the sandbox) afterwards see it.
func (s *Sandbox) Bind(source, dest string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked("bind"); err != nil {
		return err
	}
	// The parked helper's copy of the root predates the mount.
	s.dropParkedLocked()
	if err := s.root.Bind(source, dest); err != nil {
		if errors.Is(err, fsbind.ErrInvalid) {
			err = fmt.Errorf("%w: %w", sandbox.ErrInvalid, err)
		}
		return fmt.Errorf("sandbox %q: %w", s.id, err)
	}
	return nil
}

// Adopt records pid, a process that entered the sandbox by itself (forked
// from a zygote), so that Info lists it. Destroy kills it with everything
// else in the sandbox's cgroup.
func (s *Sandbox) Adopt(pid int) {
	s.mu.Lock()
	s.pids = append(s.pids, pid)
	s.outsiders = true
	s.mu.Unlock()
}

func (s *Sandbox) start(ctx context.Context, p sandbox.ProcessSpec, privileged bool) (sandbox.Process, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("start in %q: %w", s.id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.destroyed:
		return nil, fmt.Errorf("start in %q: destroyed: %w", s.id, sandbox.ErrState)
	case s.paused:
		return nil, fmt.Errorf("start in %q: paused: %w", s.id, sandbox.ErrState)
	case s.proc != nil && !s.proc.exited():
		return nil, fmt.Errorf("start in %q: a process tree is already running (pid %d): %w", s.id, s.proc.Pid(), sandbox.ErrUnsupported)
	}

	if privileged {
		s.root.Taint()
		s.outsiders = true
	}
	helper := s.parked
	s.parked = nil
	user := sandbox.DefaultUser
	if p.User != nil {
		user = *p.User
	}
	env := p.Env
	if env == nil {
		env = defaultEnv
	}
	cfg := sbinit.Config{
		Root:       s.root.Path,
		Cloneflags: cloneflags(s.spec.Namespaces),
		Hostname:   s.spec.Hostname,
		UID:        user.UID,
		GID:        user.GID,
		Dir:        p.Dir,
		Args:       p.Args,
		Env:        env,
		Stdin:      p.Stdin,
		Stdout:     p.Stdout,
		Stderr:     p.Stderr,
		CgroupFD:   -1,
		Privileged: privileged,
		NoInit:     !p.Init,
	}
	if s.spec.NetNS != "" {
		f, err := os.Open(s.spec.NetNS)
		if err != nil {
			if helper != nil {
				_ = helper.Close()
			}
			return nil, fmt.Errorf("start in %q: network namespace: %w", s.id, err)
		}
		defer f.Close()
		cfg.NetNS = f
	}
	// The pool counts OOM kills from Get (or Reset) on: nothing has run in
	// the cgroup before the first tree.
	var oomBefore uint64
	if s.proc != nil {
		oomBefore, _ = s.cg.OOMKills()
	}
	var sp *sbinit.Process
	var err error
	parkedOK := false
	if helper != nil {
		sp, parkedOK, err = s.startParked(ctx, helper, cfg)
	}
	if !parkedOK {
		sp, err = s.startNew(ctx, cfg)
	}
	if err != nil {
		if errors.Is(err, fs.ErrInvalid) {
			err = fmt.Errorf("%w: %w", sandbox.ErrInvalid, err)
		} else if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w: %w", sandbox.ErrNotFound, err)
		}
		return nil, fmt.Errorf("start %q in %q: %w", p.Args[0], s.id, err)
	}
	proc := &Process{sb: s, p: sp, oomBefore: oomBefore, done: make(chan struct{}),
		pid1: !p.Init && s.spec.Namespaces.Has(sandbox.NSPID)}
	go proc.wait()
	s.proc = proc
	// Only the live tree: the previous one has exited, and its pids may
	// already belong to someone else.
	s.pids = []int{sp.Pid()}
	s.b.log.Debug().Str("sandbox", s.id).Int("pid", sp.Pid()).Strs("args", p.Args).Bool("parked", parkedOK).Msg("started")
	return proc, nil
}

// startNew starts cfg through a new helper, which joins the sandbox's
// cgroup as it is born (v2) or first thing (v1).
func (s *Sandbox) startNew(ctx context.Context, cfg sbinit.Config) (*sbinit.Process, error) {
	if s.b.layout.Version == cgpool.V2 {
		// clone3(CLONE_INTO_CGROUP): the child is born in the cgroup,
		// through a directory the pool keeps open.
		dir, err := s.cg.JoinDir()
		if err != nil {
			return nil, err
		}
		cfg.CgroupFD = int(dir.Fd())
	} else {
		// v1: the helper joins every hierarchy itself before anything
		// else, through files the pool keeps open.
		procs, err := s.cg.JoinFiles()
		if err != nil {
			return nil, err
		}
		cfg.CgroupProcs = procs
	}
	return s.b.launcher.Start(ctx, cfg)
}

// Pause implements sandbox.Sandbox.
func (s *Sandbox) Pause(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked("pause"); err != nil {
		return err
	}
	if s.paused {
		return fmt.Errorf("pause %q: already paused: %w", s.id, sandbox.ErrState)
	}
	if err := s.cg.Freeze(ctx); err != nil {
		return fmt.Errorf("pause %q: %w", s.id, err)
	}
	s.paused = true
	return nil
}

// Unpause implements sandbox.Sandbox.
func (s *Sandbox) Unpause(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked("unpause"); err != nil {
		return err
	}
	if !s.paused {
		return fmt.Errorf("unpause %q: not paused: %w", s.id, sandbox.ErrState)
	}
	if err := s.cg.Thaw(); err != nil {
		return fmt.Errorf("unpause %q: %w", s.id, err)
	}
	s.paused = false
	return nil
}

// Stats implements sandbox.Sandbox.
func (s *Sandbox) Stats(ctx context.Context) (sandbox.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked("stats"); err != nil {
		return sandbox.Stats{}, err
	}
	st, err := s.cg.Stats()
	if err != nil {
		return sandbox.Stats{}, fmt.Errorf("stats %q: %w", s.id, err)
	}
	return sandbox.Stats{
		MemoryBytes:     st.MemoryBytes,
		MemoryPeakBytes: st.MemoryPeakBytes,
		CPU:             durationNanos(st.CPUNanos),
		Pids:            st.Pids,
		OOMKills:        st.OOMKills,
	}, nil
}

func (s *Sandbox) usableLocked(op string) error {
	if s.destroyed {
		return fmt.Errorf("%s %q: destroyed: %w", op, s.id, sandbox.ErrState)
	}
	return nil
}

// destroyTimeout bounds a Destroy whatever its caller's context: the
// contract is that everything is killed, so a cancelled ctx does not stop
// it half way.
const destroyTimeout = 10 * time.Second

// Destroy implements sandbox.Sandbox: it kills every process in the cgroup
// (frozen ones and fork bombs included), reaps the process it started,
// returns the emptied cgroup to the pool and detaches the root. Concurrent
// and later calls wait for the first one and return its result.
func (s *Sandbox) Destroy(ctx context.Context) error {
	s.mu.Lock()
	if s.destroyed {
		gone := s.gone
		s.mu.Unlock()
		select {
		case <-gone:
			return s.destroyErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.destroyed = true
	s.gone = make(chan struct{})
	proc, paused, outsiders := s.proc, s.paused, s.outsiders
	s.dropParkedLocked()
	s.mu.Unlock()
	s.destroyErr = s.destroy(proc, paused, outsiders)
	close(s.gone)
	return s.destroyErr
}

func (s *Sandbox) destroy(proc *Process, paused, outsiders bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), destroyTimeout)
	defer cancel()

	var errs []error
	// The helper we started is killed and reaped before the cgroup goes
	// back to the pool, so its OOM counter is still ours when Wait reads
	// it. As PID 1 its death takes every process of its namespace along
	// (the kernel kills and reaps them before the helper's exit
	// completes), so once it is reaped nothing of ours is left in the
	// cgroup, and the pool can check that later, off this path
	// (PutEmpty). Everything is killed through the cgroup first when that
	// does not hold: the sandbox is paused (a frozen helper cannot die;
	// Kill thaws), has no PID namespace (the program's children would
	// outlive it, holding its stdio open), or may hold processes from
	// outside the namespace.
	nsHoldsAll := s.spec.Namespaces.Has(sandbox.NSPID) && !outsiders
	emptied := false
	if paused || !nsHoldsAll {
		if err := s.cg.Kill(ctx); err != nil {
			errs = append(errs, fmt.Errorf("kill: %w", err))
		} else {
			emptied = true
		}
	}
	reaped := true
	if proc != nil {
		_ = proc.p.Signal(syscall.SIGKILL)
		select {
		case <-proc.done:
			reaped = proc.err == nil
		case <-ctx.Done():
			reaped = false
			errs = append(errs, fmt.Errorf("reap pid %d: %w", proc.Pid(), ctx.Err()))
		}
	}
	// Otherwise Put makes sure the cgroup is empty; one that cannot be
	// emptied is dropped, never handed out again.
	var err error
	if emptied || (reaped && nsHoldsAll) {
		err = s.b.cgroups.PutEmpty(s.cg)
	} else {
		err = s.b.cgroups.Put(ctx, s.cg)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("release cgroup: %w", err))
	}
	// A clean root goes back to the builder as a spare, like the cgroup
	// to its pool: the next sandbox gets it without a mount or unmount.
	if err := releaseRoot(s.root); err != nil {
		errs = append(errs, fmt.Errorf("tear down root: %w", err))
	}
	s.b.forget(s.id)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy %q: %w", s.id, err)
	}
	s.b.log.Debug().Str("sandbox", s.id).Msg("destroyed")
	return nil
}
