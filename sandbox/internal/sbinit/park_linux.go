package sbinit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNotParkable is returned by Parked.Start for a Config a parked helper
// cannot take; start the program with Launcher.Start instead.
var ErrNotParkable = errors.New("sandbox init: config does not fit a parked helper")

// The helper's limits on a start message (csrc/sbinit.c: MSG_BUF,
// MSG_STRINGS), with room for the count.
const (
	maxParkedBytes   = 65536 - 16
	maxParkedStrings = 1024 - 4
)

// Parked is a helper started ahead of time: it is already PID 1 of its new
// namespaces and has pivoted into its root (the work that does not depend
// on the program), and waits for Start. Its mount namespace holds a copy
// of the root's mounts taken at Park: mounts made under the root
// afterwards are not in it.
type Parked struct {
	root   string
	flags  uintptr
	noInit bool
	cmd    *exec.Cmd

	mu     sync.Mutex
	sock   *os.File // nil once Start or Close has used it
	mntns  *os.File // see holdMountNS; goes to the Process
	null   *os.File // /dev/null of its own, for nil stdio
	status *os.File // the status pipe; goes to the Process
}

// Park starts a helper in new namespaces (Cloneflags as in Config, which
// must include CLONE_NEWNS), lets it join the cgroups of procs (as
// Config.CgroupProcs; may be none) and enter root, then returns once it
// waits for Start. noInit is Config.NoInit of the programs it can start:
// with a PID namespace and an init, the helper forks the program's process
// now; without, it will exec the program itself. Close a Parked that is
// never started.
func (l *Launcher) Park(ctx context.Context, root string, cloneflags uintptr, noInit bool, procs []*os.File) (*Parked, error) {
	cfg := Config{Root: root, Cloneflags: cloneflags, NoInit: noInit, Args: []string{"-"}, CgroupFD: -1, CgroupProcs: procs}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if root == "" || cloneflags&unix.CLONE_NEWNET != 0 {
		return nil, fmt.Errorf("sandbox init: park needs a root and no CLONE_NEWNET: %w", ErrNotParkable)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox init: %w", os.NewSyscallError("socketpair", err))
	}
	sock, child := os.NewFile(uintptr(fds[0]), "park"), os.NewFile(uintptr(fds[1]), "park")
	defer child.Close()
	// What goes to the Parked; closed here unless it is made. (Close on a
	// nil *os.File is a no-op.)
	var statusR, null *os.File
	parked := false
	defer func() {
		if !parked {
			sock.Close()
			statusR.Close()
			null.Close()
		}
	}()
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox init: %w", err)
	}
	defer errR.Close()
	defer errW.Close() // the helper's end; closed again below, harmlessly
	// With an init, the status pipe is PID 1's from the start: it forks
	// the program's process at Park and only waits for it afterwards.
	// Without, there is none.
	var statusW *os.File
	if cfg.hasInit() {
		if statusR, statusW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("sandbox init: %w", err)
		}
		defer statusW.Close()
	}
	tree, seed, err := l.rootFiles(ctx, root)
	if err != nil {
		return nil, err
	}
	defer tree.Close() // the helper has its own once started
	files := extraFiles(child, errW, statusW, nil, procs)
	args := append([]string{"sockfaas-init"}, rootArgs(files)...)
	args = append(append(args, cfg.nsArgs(cfg.helperFlags())...), "park")
	cmd := l.helperCmd(args, append(files, tree, seed))
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: cfg.helperFlags(), Setsid: true}
	l.mu.RLock()
	if l.exe == nil {
		l.mu.RUnlock()
		return nil, fmt.Errorf("sandbox init: launcher closed: %w", os.ErrClosed)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = l.null, l.null, l.null // until Start sends the program's
	// A /dev/null of its own for nil stdio at Start: the Launcher's may be
	// closed by then.
	nullFD, err := unix.FcntlInt(l.null.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err == nil {
		null = os.NewFile(uintptr(nullFD), os.DevNull)
		err = cmd.Start()
	}
	l.mu.RUnlock()
	errW.Close()
	statusW.Close()
	if err != nil {
		return nil, fmt.Errorf("sandbox init: park helper: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	if err := awaitReport(ctx, stop, errR, &cfg); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	parked = true
	return &Parked{root: root, flags: cloneflags, noInit: cfg.NoInit && cloneflags&unix.CLONE_NEWPID != 0, cmd: cmd, sock: sock, mntns: holdMountNS(cmd.Process.Pid), null: null, status: statusR}, nil
}

// holdMountNS opens process pid's mount namespace, or returns nil. Whoever
// drops a mount namespace's last reference unmounts its tree and waits for
// an RCU grace period (namespace_unlock's synchronize_rcu_expedited), 50 to
// 100 µs here. Holding one moves that wait out of the helper's exit, which
// Process.Wait waits for, into a goroutine after it.
func holdMountNS(pid int) *os.File {
	f, err := openMountNS(pid)
	if err != nil {
		return nil
	}
	return f
}

// openMountNS opens process pid's mount namespace.
func openMountNS(pid int) (*os.File, error) {
	return os.Open("/proc/" + strconv.Itoa(pid) + "/ns/mnt")
}

// Pid returns the parked helper's host pid.
func (p *Parked) Pid() int { return p.cmd.Process.Pid }

// Root returns the root the helper entered.
func (p *Parked) Root() string { return p.root }

// Close kills and reaps a helper that was never started. After Start it is
// a no-op: the Process owns the helper.
func (p *Parked) Close() error {
	p.mu.Lock()
	sock := p.sock
	p.sock = nil
	p.mu.Unlock()
	if sock == nil {
		return nil
	}
	sock.Close() // the helper reads EOF and exits; the kill is for a stuck one
	p.kill()
	return nil
}

// kill kills and reaps the helper and closes what it was given.
func (p *Parked) kill() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	if p.mntns != nil {
		p.mntns.Close()
	}
	p.null.Close()
	p.status.Close()
}

// fits says why cfg cannot go to p, or nil.
func (p *Parked) fits(cfg *Config) error {
	switch {
	case cfg.Cloneflags != p.flags:
		return fmt.Errorf("%w: namespaces differ", ErrNotParkable)
	case cfg.NoInit != p.noInit && cfg.Cloneflags&unix.CLONE_NEWPID != 0:
		return fmt.Errorf("%w: parked for NoInit=%v", ErrNotParkable, p.noInit)
	case cfg.Privileged:
		return fmt.Errorf("%w: privileged (a parked helper has dropped its bounding set)", ErrNotParkable)
	case cfg.CgroupFD >= 0 || cfg.Attach != nil || len(cfg.CgroupProcs) > 0:
		return fmt.Errorf("%w: cgroups are joined at Park", ErrNotParkable)
	}
	for _, f := range []any{cfg.Stdin, cfg.Stdout, cfg.Stderr} {
		if _, ok := f.(*os.File); f != nil && !ok {
			return fmt.Errorf("%w: stdio that is not an *os.File", ErrNotParkable)
		}
	}
	return nil
}

// message encodes cfg as the helper's start message (see csrc/sbinit.c),
// or returns ErrNotParkable if it is too big.
func (p *Parked) message(cfg *Config) ([]byte, error) {
	c := *cfg
	c.Attach = nil // nogo
	// The root was entered at Park, which cloned the helper with these
	// flags: the helper checks they are the same.
	args := c.helperArgs(p.flags&^unix.CLONE_NEWNS, nil)[1:]
	env := c.Env
	if len(args)+len(env)+1 > maxParkedStrings {
		return nil, fmt.Errorf("%w: %d arguments and environment strings", ErrNotParkable, len(args)+len(env))
	}
	n := 0
	for _, s := range args {
		n += len(s) + 1
	}
	for _, s := range env {
		n += len(s) + 1
	}
	if n+8 > maxParkedBytes {
		return nil, fmt.Errorf("%w: %d bytes of arguments and environment", ErrNotParkable, n)
	}
	msg := make([]byte, 0, n+8)
	msg = strconv.AppendInt(msg, int64(len(args)), 10)
	msg = append(msg, 0)
	for _, s := range args {
		msg = append(append(msg, s...), 0)
	}
	for _, s := range env {
		msg = append(append(msg, s...), 0)
	}
	return msg, nil
}

// Start hands cfg to the parked helper, which goes on exactly as
// Launcher.Start's would, and returns once the program has been exec'd.
// cfg.Root is ignored (the helper is in the root it parked in, wherever
// that has been renamed to since). cfg must have the Cloneflags given to
// Park, not be Privileged, have no cgroups of its own (CgroupFD, Attach,
// CgroupProcs: the helper joined Park's), and have nil or *os.File stdio;
// otherwise Start
// returns an error wrapping ErrNotParkable and the helper stays parked.
// ErrNotParkable also comes back, with the helper reaped, if the helper
// died while parked. A parked helper starts at most once.
func (p *Parked) Start(ctx context.Context, cfg Config) (*Process, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := p.fits(&cfg); err != nil {
		return nil, err
	}
	msg, err := p.message(&cfg)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	sock := p.sock
	p.sock = nil
	p.mu.Unlock()
	if sock == nil {
		return nil, fmt.Errorf("sandbox init: parked helper already used: %w", os.ErrClosed)
	}
	defer func() {
		if sock != nil {
			sock.Close()
		}
	}()
	abort := func(err error) (*Process, error) {
		p.kill()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}

	// Plain blocking pipes, not os.Pipe: the report is read by a blocking
	// read(2) in this goroutine, which the helper's exec wakes directly,
	// without a round trip through the runtime's network poller.
	pipes := []int{-1, -1} // the error pipe's ends
	if err := unix.Pipe2(pipes, unix.O_CLOEXEC); err != nil {
		return abort(fmt.Errorf("sandbox init: %w", os.NewSyscallError("pipe2", err)))
	}
	defer func() {
		for _, fd := range pipes {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	var rights []int
	for _, v := range []any{cfg.Stdin, cfg.Stdout, cfg.Stderr} {
		f, ok := v.(*os.File)
		if !ok || f == nil {
			f = p.null
		}
		rights = append(rights, int(f.Fd()))
	}
	rights = append(rights, pipes[1])
	if cfg.NetNS != nil {
		rights = append(rights, int(cfg.NetNS.Fd()))
	}
	err = unix.Sendmsg(int(sock.Fd()), msg, unix.UnixRights(rights...), nil, 0)
	// The descriptors went into the message: their files must not be
	// finalized (and closed) before sendmsg returned.
	runtime.KeepAlive(cfg.Stdin)
	runtime.KeepAlive(cfg.Stdout)
	runtime.KeepAlive(cfg.Stderr)
	runtime.KeepAlive(cfg.NetNS)
	runtime.KeepAlive(p.null)
	if err == nil {
		p.null.Close() // the helper has its own now
	}
	if err != nil {
		if err == unix.EPIPE || err == unix.ECONNRESET || err == unix.ECONNREFUSED {
			// The helper is gone (killed, say): nothing of cfg ran.
			return abort(fmt.Errorf("%w: helper gone: %w", ErrNotParkable, os.NewSyscallError("sendmsg", err)))
		}
		// Nothing was sent (a closed stdio file, say): still parked.
		p.mu.Lock()
		p.sock, sock = sock, nil
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrNotParkable, os.NewSyscallError("sendmsg", err))
	}
	// The helper's ends live in the helper only now, so EOF on the error
	// pipe means what the protocol says.
	unix.Close(pipes[1])
	pipes[1] = -1

	stop := context.AfterFunc(ctx, func() { _ = p.cmd.Process.Kill() })
	if err := awaitReport(ctx, stop, fdReader(pipes[0]), &cfg); err != nil {
		return abort(err)
	}
	return &Process{cmd: p.cmd, status: p.status, mntns: p.mntns}, nil
}

// fdReader reads a blocking descriptor with plain read(2), in the calling
// goroutine's thread, which the writer then wakes directly.
type fdReader int

func (fd fdReader) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(int(fd), b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}
