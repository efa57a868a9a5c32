package libct

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/internal/pid1"
)

// Sandbox is a libcontainer container.
//
// The first Start runs the container's init process (PID 1 of its PID
// namespace); further Starts while it runs join its namespaces and cgroups,
// like `runc exec`. Once the first process has exited the namespaces are
// gone: Start then fails with sandbox.ErrState, and the sandbox is only good
// for Stats, Info and Destroy.
type Sandbox struct {
	b       *Backend
	id      string
	c       *libcontainer.Container
	cfg     *configs.Config
	plan    *rootPlan
	rec     record
	recFile string
	paths   map[string]string // cgroup controller -> directory
	oomBase uint64            // OOM kill count when the cgroup was made

	mu        sync.Mutex // serialises Start, Pause, Unpause, Destroy
	procs     []*Process
	init      *Process
	dead      bool // Destroy began: every method but Destroy refuses
	destroyed bool // Destroy finished
}

// ID implements sandbox.Sandbox.
func (s *Sandbox) ID() string { return s.id }

// Info implements sandbox.Sandbox. Root is "": the mounts that make up the
// root exist only in the container's mount namespace (the host directory
// libcontainer pivots into shows just empty mount points).
func (s *Sandbox) Info() sandbox.Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := sandbox.Info{
		ID:      s.id,
		Backend: s.b.Name(),
		Cgroups: cgroupDirs(s.paths),
	}
	for _, p := range s.procs {
		info.Pids = append(info.Pids, p.pid)
	}
	return info
}

func (s *Sandbox) errState(op string) error {
	return fmt.Errorf("%s in sandbox %q: destroyed: %w", op, s.id, sandbox.ErrState)
}

// Start implements sandbox.Sandbox; see the type's documentation for what a
// second Start does.
func (s *Sandbox) Start(ctx context.Context, ps sandbox.ProcessSpec) (sandbox.Process, error) {
	if err := ps.Validate(); err != nil {
		return nil, fmt.Errorf("start in sandbox %q: %w", s.id, err)
	}
	if ps.Init {
		return nil, fmt.Errorf("start in sandbox %q: an init (ProcessSpec.Init): libcontainer makes the first program PID 1: %w", s.id, sandbox.ErrUnsupported)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return nil, s.errState("start")
	}
	first := s.init == nil
	if !first {
		status, err := s.c.Status()
		if err != nil {
			return nil, fmt.Errorf("start in sandbox %q: %w", s.id, err)
		}
		switch status {
		case libcontainer.Paused:
			return nil, fmt.Errorf("start in sandbox %q: paused: %w", s.id, sandbox.ErrState)
		case libcontainer.Stopped:
			return nil, fmt.Errorf("start in sandbox %q: its first process has exited and its namespaces with it: %w", s.id, sandbox.ErrState)
		}
	}

	env := ps.Env
	if env == nil {
		env = []string{"PATH=" + defaultPath, "HOME=/scratch"}
	}
	if err := checkEnv(env); err != nil {
		return nil, fmt.Errorf("start in sandbox %q: %w", s.id, err)
	}
	args, err := s.resolveProgram(ps.Args, env)
	if err != nil {
		return nil, err
	}
	dir := ps.Dir
	if dir == "" {
		dir = "/"
	}
	if err := s.checkDir(dir, first); err != nil {
		return nil, err
	}
	args, wrapped := s.keepHomeUnset(args, env)
	user := sandbox.DefaultUser
	if ps.User != nil {
		user = *ps.User
	}
	lp := &libcontainer.Process{
		Args: args,
		Env:  env,
		UID:  int(user.UID),
		GID:  int(user.GID),
		Cwd:  dir,
		Init: first,
		// nil stdio becomes /dev/null (exec.Cmd's rule); *os.File values are
		// passed as they are, anything else through a pipe.
		Stdin:  ps.Stdin,
		Stdout: ps.Stdout,
		Stderr: ps.Stderr,
	}
	owners := stdioOwners(ps.Stdin, ps.Stdout, ps.Stderr)

	oomBase, oerr := oomKills(s.paths)
	if oerr != nil {
		oomBase = s.oomBase
	}
	err = s.c.Run(lp)
	owners.restore()
	if err != nil {
		err = mapStartError(err)
		if first {
			if rerr := s.resetContainer(); rerr != nil {
				s.b.log.Warn().Err(rerr).Str("sandbox", s.id).Msg("reset after failed start")
			}
		}
		return nil, fmt.Errorf("start %q in sandbox %q: %w", args[0], s.id, err)
	}
	pid, _ := lp.Pid()
	waitExec(pid, wrapped)
	p := &Process{s: s, lp: lp, pid: pid, init: first, oomBase: oomBase, done: make(chan struct{})}
	go p.wait()
	s.procs = append(s.procs, p)
	if first {
		s.init = p
	}
	return p, nil
}

const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// waitExec waits until pid has executed the program. libcontainer's Run
// returns as soon as its init has passed the point of no return, a moment
// before the execve; a signal sent in between reaches libcontainer's Go init
// (which drops it) or is lost when the execve resets the handlers. Until the
// execve, the process is named "runc:[2:INIT]" (nsexec's PR_SET_NAME); the
// kernel renames it just before it resets the signal handlers, so once the
// name has changed the program's own dispositions are what count. (The
// command line changes earlier, when the new memory map is installed, and is
// not good enough on its own.) wrapper, when not nil, is the argv of an
// intermediate program (see keepHomeUnset) to wait past as well.
func waitExec(pid int, wrapper []string) {
	proc := "/proc/" + strconv.Itoa(pid)
	wrapperCmdline := ""
	if wrapper != nil {
		wrapperCmdline = strings.Join(wrapper, "\x00") + "\x00"
	}
	start := time.Now()
	for {
		comm, err := os.ReadFile(proc + "/comm")
		if err != nil {
			return // gone
		}
		if strings.TrimSpace(string(comm)) != initComm {
			if wrapper == nil {
				return
			}
			cmdline, err := os.ReadFile(proc + "/cmdline")
			if err != nil || string(cmdline) != wrapperCmdline {
				return
			}
		}
		// The execve normally completes within about a millisecond (most of
		// it spent ending the Go init's other threads): poll finely, then
		// back off.
		waited := time.Since(start)
		if waited > execTimeout {
			return
		}
		if waited < 20*time.Millisecond {
			time.Sleep(100 * time.Microsecond)
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}

const initComm = "runc:[2:INIT]"

const execTimeout = 5 * time.Second

// resolveProgram finds argv[0] the way the sandbox will, from the host side
// where it can (through the root's binds), so that a missing program fails
// Start with ErrNotFound rather than starting something that exits 127. A
// bare name is looked up in env's PATH, or in the default PATH when env has
// none; in the latter case it is replaced by the absolute path found
// (libcontainer's init would consult only env), so that program sees an
// absolute argv[0].
func (s *Sandbox) resolveProgram(args, env []string) ([]string, error) {
	name := args[0]
	if strings.Contains(name, "/") {
		if !path.IsAbs(name) {
			return args, nil // relative to the working directory: init decides
		}
		host := s.plan.resolve(name)
		if host == "" {
			return args, nil // in /tmp, /dev or /proc: the host cannot tell
		}
		if _, err := os.Stat(host); err != nil {
			return nil, fmt.Errorf("start in sandbox %q: %s: %w", s.id, name, sandbox.ErrNotFound)
		}
		return args, nil
	}
	search, explicit := defaultPath, false
	if v, ok := lookupEnv(env, "PATH"); ok {
		search, explicit = v, true
	}
	unknown := false
	for _, d := range strings.Split(search, ":") {
		if !path.IsAbs(d) {
			unknown = true // relative entries depend on the working directory
			continue
		}
		cand := path.Join(d, name)
		host := s.plan.resolve(cand)
		if host == "" {
			unknown = true
			continue
		}
		if fi, err := os.Stat(host); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			if explicit {
				return args, nil // init finds the same in env's PATH
			}
			return append([]string{cand}, args[1:]...), nil
		}
	}
	if unknown {
		return args, nil
	}
	return nil, fmt.Errorf("start in sandbox %q: %s not in %s: %w", s.id, name, search, sandbox.ErrNotFound)
}

// checkDir makes a missing working directory fail Start: libcontainer's init
// would create it instead. Paths the host cannot see are left to the init,
// except in the root's own fresh /tmp and /dev, where only their mount
// points exist when the first process starts.
func (s *Sandbox) checkDir(dir string, first bool) error {
	if !path.IsAbs(dir) {
		return fmt.Errorf("start in sandbox %q: working directory %q is not absolute: %w", s.id, dir, sandbox.ErrInvalid)
	}
	dir = path.Clean(dir)
	missing := false
	if host := s.plan.resolve(dir); host != "" {
		fi, err := os.Stat(host)
		missing = err != nil || !fi.IsDir()
	} else if first && (strings.HasPrefix(dir, "/tmp/") || strings.HasPrefix(dir, "/dev/")) {
		missing = true
		for _, m := range s.plan.mounts {
			if m.Destination == dir && m.Device != "bind" {
				missing = false
			}
		}
	}
	if missing {
		return fmt.Errorf("start in sandbox %q: working directory %s: %w", s.id, dir, sandbox.ErrNotFound)
	}
	return nil
}

// checkEnv refuses what libcontainer's init would refuse only after the
// container's namespaces were made.
func checkEnv(env []string) error {
	for _, kv := range env {
		if i := strings.IndexByte(kv, '='); i <= 0 || strings.IndexByte(kv, 0) >= 0 {
			return fmt.Errorf("environment entry %q is not NAME=VALUE: %w", kv, sandbox.ErrInvalid)
		}
	}
	return nil
}

// lookupEnv returns the last value of key in env.
func lookupEnv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v, true
		}
	}
	return "", false
}

// envProgram is the helper keepHomeUnset runs the program through.
const envProgram = "/usr/bin/env"

// keepHomeUnset honours an environment without HOME (or with an empty
// HOME). libcontainer's init adds HOME from the container's /etc/passwd in
// that case, with no way to opt out; so the program is run through
// "env -u HOME" (or "env HOME="), which removes it again and then executes
// the program in the same process, looking a bare name up in env's own
// PATH. It needs /usr/bin/env in the root; without it (or for a program
// whose name contains '=', which env would read as an assignment) HOME
// stays as libcontainer sets it. It returns the argv to run and, when
// wrapped, that argv for waitExec.
func (s *Sandbox) keepHomeUnset(args, env []string) (run, wrapper []string) {
	home, ok := lookupEnv(env, "HOME")
	if ok && home != "" {
		return args, nil
	}
	if strings.Contains(args[0], "=") {
		return args, nil
	}
	host := s.plan.resolve(envProgram)
	if fi, err := os.Stat(host); host == "" || err != nil || !fi.Mode().IsRegular() {
		return args, nil
	}
	pre := []string{envProgram, "-u", "HOME"}
	if ok {
		pre = []string{envProgram, "HOME="}
	}
	run = append(pre, args...)
	return run, run
}

// mapStartError maps the failures of libcontainer's init that mean "no such
// program" to ErrNotFound; the rest keep libcontainer's wording.
func mapStartError(err error) error {
	msg := err.Error()
	if strings.Contains(msg, `exec: "`) &&
		(strings.Contains(msg, "executable file not found") || strings.Contains(msg, "no such file or directory")) {
		return fmt.Errorf("%w: %w", sandbox.ErrNotFound, err)
	}
	return mapError(err)
}

// resetContainer runs after a failed first Start. libcontainer refuses a
// second init once the first got far enough to be recorded, and removes the
// cgroups when its init fails; a sandbox must stay usable and keep its
// cgroups until Destroy. So the container is destroyed and created again
// with the same configuration (nothing of it was running), and the cgroups
// made again.
func (s *Sandbox) resetContainer() error {
	if err := killCgroup(s.paths, killTimeout); err != nil {
		return err
	}
	if err := s.c.Destroy(); err != nil {
		return err
	}
	c, err := libcontainer.Create(filepath.Join(s.b.stateDir, containersDir), s.id, s.cfg)
	if err != nil {
		return err
	}
	s.c = c
	return s.makeCgroups()
}

// makeCgroups creates the sandbox's cgroups with their limits and takes the
// OOM baseline.
func (s *Sandbox) makeCgroups() error {
	cm, err := manager.NewWithPaths(s.cfg.Cgroups, s.paths)
	if err != nil {
		return err
	}
	if err := cm.Apply(-1); err != nil {
		return err
	}
	if err := cm.Set(s.cfg.Cgroups.Resources); err != nil {
		return err
	}
	base, err := oomKills(s.paths)
	if err != nil {
		return fmt.Errorf("read OOM count: %w", err)
	}
	s.oomBase = base
	return nil
}

// Pause implements sandbox.Sandbox: it returns once every process in the
// sandbox is frozen. Pausing a paused sandbox, or one with no running
// process, fails with ErrState.
func (s *Sandbox) Pause(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return s.errState("pause")
	}
	if s.init == nil {
		return fmt.Errorf("pause sandbox %q: nothing started: %w", s.id, sandbox.ErrState)
	}
	if st, err := s.c.Status(); err == nil && st == libcontainer.Paused {
		return fmt.Errorf("pause sandbox %q: already paused: %w", s.id, sandbox.ErrState)
	}
	if err := s.c.Pause(); err != nil {
		return fmt.Errorf("pause sandbox %q: %w", s.id, mapError(err))
	}
	return nil
}

// Unpause implements sandbox.Sandbox. Unpausing a sandbox that is not paused
// fails with ErrState.
func (s *Sandbox) Unpause(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return s.errState("unpause")
	}
	if err := s.c.Resume(); err != nil {
		return fmt.Errorf("unpause sandbox %q: %w", s.id, mapError(err))
	}
	return nil
}

// Stats implements sandbox.Sandbox.
func (s *Sandbox) Stats(ctx context.Context) (sandbox.Stats, error) {
	s.mu.Lock()
	dead, c := s.dead, s.c
	s.mu.Unlock()
	if dead {
		return sandbox.Stats{}, s.errState("stats")
	}
	st, err := c.Stats()
	if err != nil {
		return sandbox.Stats{}, fmt.Errorf("stats of sandbox %q: %w", s.id, err)
	}
	cg := st.CgroupStats
	out := sandbox.Stats{
		MemoryBytes:     cg.MemoryStats.Usage.Usage,
		MemoryPeakBytes: cg.MemoryStats.Usage.MaxUsage,
		CPU:             time.Duration(cg.CpuStats.CpuUsage.TotalUsage),
		Pids:            cg.PidsStats.Current,
	}
	if n, err := oomKills(s.paths); err == nil && n >= s.oomBase {
		out.OOMKills = n - s.oomBase
	}
	return out, nil
}

// Destroy implements sandbox.Sandbox: it kills every process (a paused
// sandbox is thawed for it), waits until they are reaped, removes the
// container's cgroups and state and the sandbox's root and scratch
// directories. It is idempotent; if it fails it can be called again.
func (s *Sandbox) Destroy(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.destroyed || s.c == nil { // destroyed, or its Create failed
		return nil
	}
	s.dead = true
	start := time.Now()
	if err := s.destroyLocked(ctx); err != nil {
		return fmt.Errorf("destroy sandbox %q: %w", s.id, err)
	}
	s.destroyed = true
	s.b.mu.Lock()
	if s.b.sandboxes[s.id] == s {
		delete(s.b.sandboxes, s.id)
	}
	s.b.mu.Unlock()
	s.b.log.Debug().Str("sandbox", s.id).Dur("dur", time.Since(start)).Msg("sandbox destroyed")
	return nil
}

func (s *Sandbox) destroyLocked(ctx context.Context) error {
	if s.init != nil {
		// SIGKILL to the init of a PID namespace takes every process in it
		// along; libcontainer thaws a paused (v1) cgroup for it.
		if err := s.c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
			return err
		}
	}
	// Anything that escaped (a start that failed half-way).
	if err := killCgroup(s.paths, killTimeout); err != nil {
		return err
	}
	// Our wait goroutines reap what we started; wait for them so that the
	// statuses and the stdio copies are complete.
	for _, p := range s.procs {
		select {
		case <-p.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := s.c.Destroy(); err != nil {
		return mapError(err)
	}
	if err := removeSandboxFiles(s.rec); err != nil {
		return err
	}
	if err := os.Remove(s.recFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// stdioOwners remembers the owners of the *os.File stdio of a process:
// libcontainer's init chowns its stdio to the process's uid, which for a
// caller's file or terminal would be a surprise. restore puts them back.
type fileOwner struct {
	f   *os.File
	uid int
}

type fileOwners []fileOwner

func stdioOwners(stdio ...any) fileOwners {
	var out fileOwners
	for _, x := range stdio {
		f, ok := x.(*os.File)
		if !ok || f == nil {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			continue
		}
		out = append(out, fileOwner{f: f, uid: int(st.Uid)})
	}
	return out
}

func (o fileOwners) restore() {
	for _, fo := range o {
		var st unix.Stat_t
		if err := unix.Fstat(int(fo.f.Fd()), &st); err == nil && int(st.Uid) != fo.uid {
			_ = unix.Fchown(int(fo.f.Fd()), fo.uid, -1)
		}
	}
}

// Process is a process started in a sandbox.
type Process struct {
	s       *Sandbox
	lp      *libcontainer.Process
	pid     int
	init    bool   // PID 1 of the sandbox's PID namespace
	oomBase uint64 // OOM kill count when it started

	signals pid1.Signals // for init: see Signal

	done   chan struct{}
	status sandbox.ExitStatus
	err    error
}

// Pid implements sandbox.Process: the host PID.
func (p *Process) Pid() int { return p.pid }

// wait reaps the process once and publishes its status.
func (p *Process) wait() {
	defer close(p.done)
	ps, err := p.lp.Wait()
	if ps == nil {
		p.status, p.err = sandbox.ExitStatus{Code: -1}, fmt.Errorf("wait for pid %d: %w", p.pid, err)
		return
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		p.status = sandbox.ExitStatus{Code: -1, Signal: p.signals.Reported(ws.Signal())}
	default:
		p.status = sandbox.ExitStatus{Code: ws.ExitStatus()}
	}
	// The kernel counts an OOM kill before it sends the SIGKILL, so the
	// count is final by the time we have reaped the victim.
	if n, err := oomKills(p.s.paths); err == nil && n > p.oomBase {
		p.status.OOMKilled = true
	}
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

// Signal implements sandbox.Process.
//
// The first process is PID 1 of its namespace, and the kernel drops signals
// to such an init unless it handles them (SIGKILL and SIGSTOP aside). Signal
// makes them act as on any other process: a signal the program handles is
// sent as is; one whose default action is to terminate becomes SIGKILL, and
// Wait then reports the original signal; a default stop becomes SIGSTOP; one
// the program ignores, or whose default is to be ignored, does nothing.
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("signal pid %d: process has exited: %w", p.pid, sandbox.ErrState)
	default:
	}
	send := func(sig syscall.Signal) error { return p.lp.Signal(sig) }
	var err error
	if p.init {
		// The kernel drops what PID 1 does not handle.
		err = p.signals.Send(p.pid, sig, send)
	} else {
		err = send(sig)
	}
	if err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signal pid %d: process has exited: %w", p.pid, sandbox.ErrState)
		}
		return fmt.Errorf("signal pid %d: %w", p.pid, err)
	}
	return nil
}
