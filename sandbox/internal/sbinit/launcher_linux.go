package sbinit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// allowedFlags are the clone flags Config.Cloneflags may hold. CLONE_NEWUSER
// is not among them: the helper's privilege drop assumes the host's users.
const allowedFlags = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUTS | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// hostNameMax is the kernel's limit for sethostname (HOST_NAME_MAX).
const hostNameMax = 64

// MaxCgroupProcs is how many Config.CgroupProcs the helper takes.
const MaxCgroupProcs = 16

func (c *Config) validate() error {
	switch {
	case len(c.Args) == 0 || c.Args[0] == "":
		return fmt.Errorf("sandbox init: no program: %w", fs.ErrInvalid)
	case hasNUL(c.Args) || hasNUL(c.Env) || hasNUL([]string{c.Root, c.Hostname, c.Dir}):
		// execve would refuse them, but only after every other step; and
		// the helper's arguments and start message are NUL-separated.
		return fmt.Errorf("sandbox init: a NUL byte in an argument, the environment, the root, hostname or directory: %w", fs.ErrInvalid)
	case c.Cloneflags&^allowedFlags != 0:
		return fmt.Errorf("sandbox init: clone flags %#x not supported: %w", c.Cloneflags&^allowedFlags, fs.ErrInvalid)
	case c.Root != "" && c.Cloneflags&unix.CLONE_NEWNS == 0:
		return fmt.Errorf("sandbox init: a root needs CLONE_NEWNS: %w", fs.ErrInvalid)
	case c.NetNS != nil && c.Cloneflags&unix.CLONE_NEWNET != 0:
		return fmt.Errorf("sandbox init: join a network namespace or make one, not both: %w", fs.ErrInvalid)
	case c.Cloneflags&unix.CLONE_NEWUTS != 0 && len(c.Hostname) > hostNameMax:
		return fmt.Errorf("sandbox init: hostname longer than %d bytes: %w", hostNameMax, fs.ErrInvalid)
	case len(c.CgroupProcs) > MaxCgroupProcs:
		return fmt.Errorf("sandbox init: more than %d cgroup.procs files: %w", MaxCgroupProcs, fs.ErrInvalid)
	case slices.Contains(c.CgroupProcs, nil):
		return fmt.Errorf("sandbox init: nil cgroup.procs file: %w", fs.ErrInvalid)
	}
	return nil
}

func hasNUL(ss []string) bool {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return true
		}
	}
	return false
}

// helperFlags are the clone flags the helper is cloned with: with a root,
// it makes its mount namespace itself (see seed_linux.go).
func (c *Config) helperFlags() uintptr {
	if c.Root != "" {
		return c.Cloneflags &^ unix.CLONE_NEWNS
	}
	return c.Cloneflags
}

// helperArgs encodes c as the helper's argv (see csrc/sbinit.c), with
// flags as the clone flags and root as the arguments that say where its
// root is (rootArgs), if any.
func (c *Config) helperArgs(flags uintptr, root []string) []string {
	args := make([]string, 0, 10+len(c.Args))
	args = append(args, "sockfaas-init")
	args = append(args, root...)
	if c.Hostname != "" && c.Cloneflags&unix.CLONE_NEWUTS != 0 {
		args = append(args, "host="+c.Hostname)
	}
	if c.Dir != "" {
		args = append(args, "dir="+c.Dir)
	}
	args = append(args,
		"uid="+strconv.FormatUint(uint64(c.UID), 10),
		"gid="+strconv.FormatUint(uint64(c.GID), 10))
	args = append(args, c.nsArgs(flags)...)
	if c.NetNS != nil {
		args = append(args, "netns")
	}
	if c.Privileged {
		args = append(args, "priv")
	}
	if c.Attach == nil {
		// Nothing to wait for: no go pipe at all.
		args = append(args, "nogo")
	}
	args = append(args, "--")
	return append(args, c.Args...)
}

// nsArgs are the helper's arguments for its namespaces and cgroups, which
// Park and Start share (the helper refuses a start whose noinit differs
// from Park's): flags as the clone flags, the number of CgroupProcs, and
// noinit when it applies.
func (c *Config) nsArgs(flags uintptr) []string {
	args := []string{"flags=" + strconv.FormatUint(uint64(flags), 10)}
	if len(c.CgroupProcs) > 0 {
		args = append(args, "procs="+strconv.Itoa(len(c.CgroupProcs)))
	}
	if c.NoInit && c.Cloneflags&unix.CLONE_NEWPID != 0 {
		args = append(args, "noinit")
	}
	return args
}

// hasInit says whether the helper stays as the PID namespace's init, which
// reports the program's status on the status pipe.
func (c *Config) hasInit() bool { return c.Cloneflags&unix.CLONE_NEWPID != 0 && !c.NoInit }

// parseStepError decodes the helper's "<step>: <errno>" report.
func parseStepError(msg string, cfg *Config) error {
	step, num, ok := strings.Cut(msg, ": ")
	n, err := strconv.ParseUint(num, 10, 16)
	if !ok || err != nil || n == 0 {
		return &StepError{Step: "helper", Err: fmt.Errorf("unexpected report %q", msg)}
	}
	if step == "exec" {
		step = fmt.Sprintf("exec %q", cfg.Args[0])
	}
	return &StepError{Step: step, Err: syscall.Errno(n)}
}

// Launcher holds the helper, ready to exec. It is safe for concurrent use.
type Launcher struct {
	mu   sync.RWMutex // Start holds it shared so Close cannot pull the memfd away
	exe  *os.File     // nil once closed
	null *os.File     // /dev/null, read-write: parked helpers' nil stdio

	seedMu sync.Mutex
	seed   *os.File // the seed mount namespace (see seedNS), once made
}

// NewLauncher loads the embedded helper into a sealed memfd. It returns an
// error wrapping errors.ErrUnsupported where no helper is embedded.
func NewLauncher() (*Launcher, error) {
	if len(helper) == 0 {
		return nil, fmt.Errorf("sandbox init: no helper for this architecture: %w", errors.ErrUnsupported)
	}
	fd, err := unix.MemfdCreate("sockfaas-init", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("sandbox init: %w", os.NewSyscallError("memfd_create", err))
	}
	rw := os.NewFile(uintptr(fd), "sockfaas-init")
	defer rw.Close()
	if _, err := rw.Write(helper); err != nil {
		return nil, fmt.Errorf("sandbox init: write helper: %w", err)
	}
	const seals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return nil, fmt.Errorf("sandbox init: %w", os.NewSyscallError("seal helper", err))
	}
	// Older kernels refuse to exec a file open for writing (ETXTBSY), so
	// the launcher keeps a read-only descriptor, out of the child's way.
	ro, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox init: %w", os.NewSyscallError("reopen helper", err))
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(ro)
		return nil, fmt.Errorf("sandbox init: %w", err)
	}
	return &Launcher{exe: os.NewFile(uintptr(ro), "sockfaas-init"), null: null}, nil
}

// Close releases the helper. Processes already started are not affected;
// Start fails afterwards.
func (l *Launcher) Close() error {
	l.mu.Lock()
	if l.exe == nil {
		l.mu.Unlock()
		return nil
	}
	err := l.exe.Close()
	l.exe = nil
	// Parked helpers already started hold their own copies.
	l.null.Close()
	l.mu.Unlock()
	// Only now, and not under mu: seedNS takes seedMu, then mu. No start
	// that saw exe is still in flight (they hold mu shared), and none
	// that comes later gets past the exe check.
	l.seedMu.Lock()
	if l.seed != nil {
		l.seed.Close()
		l.seed = nil
	}
	l.seedMu.Unlock()
	return err
}

// Start runs cfg.Args in new namespaces. It returns once the program has
// been exec'd, or with the failed step (a *StepError) after reaping the
// helper. ctx bounds only the start: if it ends first, the helper is killed
// and reaped and Start returns ctx.Err(); the started program outlives ctx.
func (l *Launcher) Start(ctx context.Context, cfg Config) (*Process, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var pipes [6]*os.File // err r/w, status r/w (with an init), go r/w (with Attach)
	closeAll := func() {
		for _, f := range pipes {
			if f != nil {
				f.Close()
			}
		}
	}
	for i, need := range [3]bool{true, cfg.hasInit(), cfg.Attach != nil} {
		if !need {
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("sandbox init: %w", err)
		}
		pipes[2*i], pipes[2*i+1] = r, w
	}
	errR, errW, statusR, statusW, goR, goW := pipes[0], pipes[1], pipes[2], pipes[3], pipes[4], pipes[5]
	defer closeAll() // closing twice is harmless; statusR is kept by nil-ing it

	env := cfg.Env
	if env == nil {
		env = []string{}
	}
	files := extraFiles(goR, errW, statusW, cfg.NetNS, cfg.CgroupProcs)
	var root []string
	if cfg.Root != "" {
		tree, seed, err := l.rootFiles(ctx, cfg.Root)
		if err != nil {
			return nil, err
		}
		defer tree.Close() // the helper has its own once started
		root = rootArgs(files)
		files = append(files, tree, seed)
	}
	args := cfg.helperArgs(cfg.helperFlags(), root)
	// nil stdio is the Launcher's /dev/null, which os/exec would
	// otherwise open twice per start. (Close, which closes it, takes
	// l.mu, which the start below holds.)
	stdin, stdout, stderr := cfg.Stdin, cfg.Stdout, cfg.Stderr
	if stdin == nil {
		stdin = l.null
	}
	if stdout == nil {
		stdout = l.null
	}
	if stderr == nil {
		stderr = l.null
	}
	l.mu.RLock()
	if l.exe == nil {
		l.mu.RUnlock()
		return nil, fmt.Errorf("sandbox init: launcher closed: %w", os.ErrClosed)
	}
	cmd := l.helperCmd(args, files)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, stdin, stdout, stderr
	// Without a PID namespace a background child of the program can hold
	// a stdio pipe open after the program exited; Wait then stops copying
	// after this long instead of waiting for it.
	cmd.WaitDelay = time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: cfg.helperFlags(),
		// Out of the caller's session: no controlling terminal, no
		// terminal signals (Ctrl-C) reaching sandboxes.
		Setsid:      true,
		UseCgroupFD: cfg.CgroupFD >= 0,
		CgroupFD:    cfg.CgroupFD,
		// No Pdeathsig: it tracks the forking thread, not the process,
		// and Go threads come and go.
	}
	err := cmd.Start()
	l.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("sandbox init: start helper: %w", err)
	}
	// The helper's ends now live in the helper only, so EOF on the error
	// pipe means what the protocol says.
	for _, f := range []*os.File{goR, errW, statusW} {
		if f != nil {
			f.Close()
		}
	}

	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	abort := func(err error) (*Process, error) {
		stop()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if cfg.Attach != nil {
		if err := cfg.Attach(cmd.Process.Pid); err != nil {
			return abort(fmt.Errorf("sandbox init: attach pid %d: %w", cmd.Process.Pid, err))
		}
		if _, err := goW.Write([]byte{0}); err != nil {
			return abort(fmt.Errorf("sandbox init: helper gone before start: %w", err))
		}
		goW.Close()
	}

	if err := awaitReport(ctx, stop, errR, &cfg); err != nil {
		return abort(err)
	}
	pipes[2] = nil // statusR now belongs to the Process
	return &Process{cmd: cmd, status: statusR}, nil
}

// helperCmd returns a command that execs the helper with extra as its
// descriptors from 3 on. The helper's memfd goes last among them, and the
// command execs it as /proc/self/fd/N of that slot. It must be a slot:
// while it moves descriptors into place, Go's forked child dups some to
// the numbers just above the highest one it was given, which in a busy
// process can be any number, the memfd's own included (exec then ran
// whatever landed there, and failed with EACCES). l.mu must be held.
func (l *Launcher) helperCmd(args []string, extra []*os.File) *exec.Cmd {
	extra = append(extra[:len(extra):len(extra)], l.exe)
	return &exec.Cmd{
		Path:       "/proc/self/fd/" + strconv.Itoa(2+len(extra)),
		Args:       args,
		ExtraFiles: extra,
	}
}

// awaitReport reads the helper's error pipe r to EOF: at most 4 KiB, a
// "<step>: <errno>" report, or nothing once the program has been exec'd
// (every copy of the pipe is close-on-exec). stop is the context.AfterFunc
// that kills the helper when ctx ends; if it fired, awaitReport returns
// ctx's error. A report comes back as a *StepError.
func awaitReport(ctx context.Context, stop func() bool, r io.Reader, cfg *Config) error {
	report, err := io.ReadAll(io.LimitReader(r, 4096))
	switch {
	case !stop():
		return ctx.Err() // the helper was (or is being) killed
	case err != nil:
		return fmt.Errorf("sandbox init: read helper report: %w", err)
	case len(report) > 0:
		return parseStepError(string(report), cfg)
	}
	return nil
}

// Process is a program started by Launcher.Start. Its host pid is the
// helper's: with a PID namespace (and an init, see Config.NoInit) the
// helper is the namespace's init and the program its child, otherwise the
// helper became the program.
type Process struct {
	cmd    *exec.Cmd
	status *os.File // the init's status pipe; nil without an init
	mntns  *os.File // the helper's mount namespace, if held (see holdMountNS)
}

// Pid returns the helper's host pid (the program's, without a PID
// namespace or with NoInit).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the helper; with a PID namespace and an init the
// helper forwards it to the program (SIGKILL and SIGSTOP excepted: they hit
// the helper, and a killed helper takes the whole namespace with it). With
// NoInit the program is PID 1 and the kernel drops what it does not handle
// (see package pid1). It returns os.ErrProcessDone once Wait has reaped the
// helper.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits for the program to exit, drains its stdio pipes, and returns
// its wait status. Call it exactly once. The status is the program's own,
// even with a PID namespace (the helper passes it on); if the helper itself
// died first (killed by SIGKILL, say), it is the helper's status. A non-nil
// error means waiting or copying stdio failed; the status is still valid
// if the error came from copying.
func (p *Process) Wait() (syscall.WaitStatus, error) {
	err := p.cmd.Wait()
	if ns := p.mntns; ns != nil {
		p.mntns = nil
		go ns.Close()
	}
	if p.status != nil {
		defer p.status.Close()
	}
	if p.cmd.ProcessState == nil {
		return 0, fmt.Errorf("sandbox init: wait: %w", err)
	}
	ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if p.status != nil { // else no init: the helper became the program
		var b [4]byte
		if n, _ := io.ReadFull(p.status, b[:]); n == len(b) {
			ws = syscall.WaitStatus(binary.NativeEndian.Uint32(b[:]))
		}
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return ws, fmt.Errorf("sandbox init: wait: %w", err)
	}
	return ws, nil
}

// extraFiles lists the helper's descriptors from 3 on, in the order
// csrc/sbinit.c expects them: go pipe, error pipe, status pipe, network
// namespace, cgroup.procs files. A nil entry is a closed descriptor.
func extraFiles(goR, errW, statusW, netns *os.File, procs []*os.File) []*os.File {
	files := make([]*os.File, 0, 4+len(procs))
	files = append(files, goR, errW, statusW)
	if netns != nil || len(procs) > 0 {
		files = append(files, netns)
	}
	return append(files, procs...)
}
