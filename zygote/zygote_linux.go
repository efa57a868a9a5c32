package zygote

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
)

// zygoteNamespaces: a zygote's own sandbox has no PID namespace, so that
// the pids its children report are host pids. It has a private,
// loopback-only network namespace: children that are given no network of
// their own must not land on the host's (its loopback services, its
// abstract sockets).
const zygoteNamespaces = sandbox.NSMount | sandbox.NSIPC | sandbox.NSUTS | sandbox.NSNet

// defaultEnv keeps numerical libraries from starting thread pools in the
// zygote: threads do not survive fork, and an instance has a CPU or less.
var defaultEnv = []string{
	"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8",
	"OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1",
}

// Zygote is a running fork server in a lean sandbox of its own (see the
// package doc). It is safe for concurrent use: forks run in parallel, each
// on its own connection.
//
// A zygote whose process died is detected on the next Fork (ErrZygote) and
// replaced by Restart, which builds a fresh sandbox and process with the
// same configuration (a child zygote is forked again from its parent,
// restarting the parent first if it is dead too). Instances forked earlier
// live on in their own sandboxes.
type Zygote struct {
	cfg    Config
	be     *lean.Backend
	log    zerolog.Logger
	parent *Zygote

	restartMu sync.Mutex // serialises Restart and Close
	mu        sync.Mutex
	cur       *incarnation
	closed    bool
}

// incarnation is one run of a zygote: its sandbox and process.
type incarnation struct {
	sb   *lean.Sandbox
	sock string
	done chan struct{} // closed when the process exited
	stop func()        // kills the process (child zygotes: closes the fork)
	tail *lineTail
}

func (inc *incarnation) alive() bool {
	select {
	case <-inc.done:
		return false
	default:
		return true
	}
}

// Start creates the zygote's sandbox on be, starts the fork server in it
// and returns once it listens (or its startup failed: an import error is
// reported with the zygote's stderr).
func Start(ctx context.Context, be *lean.Backend, cfg Config) (*Zygote, error) {
	z, err := newZygote(be, cfg, nil)
	if err != nil {
		return nil, err
	}
	inc, err := z.launch(ctx)
	if err != nil {
		return nil, err
	}
	z.cur = inc
	z.log.Info().Str("zygote", cfg.ID).Strs("packages", cfg.Packages).Int("pid", inc.sb.Info().Pids[0]).Msg("zygote ready")
	return z, nil
}

func newZygote(be *lean.Backend, cfg Config, parent *Zygote) (*Zygote, error) {
	if cfg.ID == "" {
		cfg.ID = "zygote"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.RuntimeDir == "" || !filepath.IsAbs(cfg.RuntimeDir) {
		return nil, fmt.Errorf("zygote %s: runtime dir %q must be an absolute host path (see WriteRuntime): %w", cfg.ID, cfg.RuntimeDir, sandbox.ErrInvalid)
	}
	for _, p := range cfg.Packages {
		if p == "" || strings.ContainsAny(p, ", \t\n") {
			return nil, fmt.Errorf("zygote %s: bad package name %q: %w", cfg.ID, p, sandbox.ErrInvalid)
		}
	}
	log := zerolog.Nop()
	if cfg.Logger != nil {
		log = *cfg.Logger
	}
	return &Zygote{cfg: cfg, be: be, log: log, parent: parent}, nil
}

// ID is the zygote's sandbox ID.
func (z *Zygote) ID() string { return z.cfg.ID }

// Packages lists what the zygote imported on top of its parent.
func (z *Zygote) Packages() []string { return append([]string(nil), z.cfg.Packages...) }

// Alive reports whether the zygote's process is running.
func (z *Zygote) Alive() bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.cur != nil && z.cur.alive()
}

// Pid is the zygote's host pid, or 0 when it is not running.
func (z *Zygote) Pid() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.cur == nil {
		return 0
	}
	pids := z.cur.sb.Info().Pids
	if len(pids) == 0 {
		return 0
	}
	return pids[len(pids)-1]
}

// Sandbox is the zygote's current sandbox (nil when it is not running).
func (z *Zygote) Sandbox() *lean.Sandbox {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.cur == nil {
		return nil
	}
	return z.cur.sb
}

// MemoryBytes is the current memory charge of the zygote's cgroup: what it
// costs to keep it (its children are charged to their own sandboxes).
func (z *Zygote) MemoryBytes(ctx context.Context) (uint64, error) {
	sb := z.Sandbox()
	if sb == nil {
		return 0, fmt.Errorf("zygote %s: not running: %w", z.cfg.ID, ErrZygote)
	}
	st, err := sb.Stats(ctx)
	if err != nil {
		return 0, err
	}
	return st.MemoryBytes, nil
}

func (z *Zygote) binds() []fsbind.Bind {
	return append([]fsbind.Bind{{Source: z.cfg.RuntimeDir, Dest: RuntimeDir}}, z.cfg.PackageDirs...)
}

func (z *Zygote) paths() []string {
	var out []string
	for _, b := range z.cfg.PackageDirs {
		out = append(out, b.Dest)
	}
	return out
}

func (z *Zygote) createSandbox(ctx context.Context) (*lean.Sandbox, string, error) {
	sbx, err := z.be.Create(ctx, z.cfg.ID, sandbox.Spec{
		Root:       fsbind.Spec{Binds: z.binds()},
		Namespaces: zygoteNamespaces,
		Hostname:   z.cfg.ID,
		Limits:     z.cfg.Limits,
	})
	if err != nil {
		return nil, "", fmt.Errorf("zygote %s: %w", z.cfg.ID, err)
	}
	sb := sbx.(*lean.Sandbox)
	sock := filepath.Join(sb.Scratch(), filepath.Base(Socket))
	if len(sock) >= 108 {
		_ = sb.Destroy(ctx)
		return nil, "", fmt.Errorf("zygote %s: socket path %s is longer than a Unix socket allows; use a shorter lean state dir: %w", z.cfg.ID, sock, sandbox.ErrInvalid)
	}
	return sb, sock, nil
}

func (z *Zygote) launch(ctx context.Context) (*incarnation, error) {
	if z.parent != nil {
		return z.launchChild(ctx)
	}
	return z.launchRoot(ctx)
}

func (z *Zygote) launchRoot(ctx context.Context) (_ *incarnation, err error) {
	sb, sock, err := z.createSandbox(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = sb.Destroy(context.Background())
		}
	}()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("zygote %s: %w", z.cfg.ID, err)
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return nil, fmt.Errorf("zygote %s: %w", z.cfg.ID, err)
	}
	args := []string{Python, "-I", RuntimeDir + "/forkserver.py", "--socket", Socket}
	if len(z.cfg.Packages) > 0 {
		args = append(args, "--import", strings.Join(z.cfg.Packages, ","))
	}
	if p := z.paths(); len(p) > 0 {
		args = append(args, "--path", strings.Join(p, ":"))
	}
	proc, err := sb.StartPrivileged(ctx, sandbox.ProcessSpec{
		Args:   args,
		Env:    z.env(),
		Stdout: outW,
		Stderr: errW,
		// The zygote's forked instances live in its PID namespace:
		// their orphans go to an init, not to the zygote.
		Init: true,
	})
	outW.Close()
	errW.Close()
	if err != nil {
		errR.Close()
		return nil, fmt.Errorf("zygote %s: start: %w", z.cfg.ID, err)
	}
	inc := &incarnation{sb: sb, sock: sock, done: make(chan struct{}), tail: newLineTail(z.log, z.cfg.ID)}
	go inc.tail.consume(errR)
	go func() {
		st, _ := proc.Wait(context.Background())
		z.log.Info().Str("zygote", z.cfg.ID).Int("code", st.Code).Int("signal", int(st.Signal)).Bool("oom", st.OOMKilled).Msg("zygote exited")
		close(inc.done)
	}()
	inc.stop = func() { _ = proc.Signal(syscall.SIGKILL) }
	if err := waitReadyLine(ctx, outR, z.cfg.ReadyTimeout); err != nil {
		inc.stop()
		<-inc.done
		return nil, fmt.Errorf("zygote %s: not ready: %v: %s: %w", z.cfg.ID, err, inc.tail.wait(time.Second), ErrZygote)
	}
	return inc, nil
}

// waitReadyLine reads the fork server's "ready" line from its stdout.
func waitReadyLine(ctx context.Context, r *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = r.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = r.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	line, err := bufio.NewReader(r).ReadString('\n')
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("exited during startup")
		}
		return err
	}
	if strings.TrimSpace(line) != "ready" {
		return fmt.Errorf("unexpected output %q", line)
	}
	return nil
}

func (z *Zygote) env() []string {
	env := append([]string(nil), defaultEnv...)
	return append(env, z.cfg.Env...)
}

// Child forks a child zygote from z into a new sandbox of its own (created
// on be from cfg) that imports cfg.Packages on top of what z imported.
// cfg.RuntimeDir defaults to z's; z's package directories are bound into the
// child's sandbox too.
func (z *Zygote) Child(ctx context.Context, be *lean.Backend, cfg Config) (*Zygote, error) {
	if cfg.RuntimeDir == "" {
		cfg.RuntimeDir = z.cfg.RuntimeDir
	}
	if cfg.Logger == nil {
		cfg.Logger = z.cfg.Logger
	}
	seen := map[string]bool{}
	for _, b := range cfg.PackageDirs {
		seen[b.Dest] = true
	}
	for _, b := range z.cfg.PackageDirs {
		if !seen[b.Dest] {
			cfg.PackageDirs = append(cfg.PackageDirs, b)
		}
	}
	c, err := newZygote(be, cfg, z)
	if err != nil {
		return nil, err
	}
	inc, err := c.launch(ctx)
	if err != nil {
		return nil, err
	}
	c.cur = inc
	c.log.Info().Str("zygote", cfg.ID).Str("parent", z.cfg.ID).Strs("packages", cfg.Packages).Msg("child zygote ready")
	return c, nil
}

func (z *Zygote) launchChild(ctx context.Context) (_ *incarnation, err error) {
	sb, sock, err := z.createSandbox(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = sb.Destroy(context.Background())
		}
	}()
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("zygote %s: %w", z.cfg.ID, err)
	}
	inc := &incarnation{sb: sb, sock: sock, done: make(chan struct{}), tail: newLineTail(z.log, z.cfg.ID)}
	go inc.tail.consume(errR)
	req := ForkRequest{
		Kind:     KindZygote,
		Env:      z.env(),
		Hostname: z.cfg.ID,
		Packages: z.cfg.Packages,
		Stderr:   errW,
		Timeout:  z.cfg.ReadyTimeout,
	}
	inst, err := z.parent.fork(ctx, sb, req, forkOpts{paths: z.paths()})
	errW.Close()
	if err != nil {
		return nil, fmt.Errorf("zygote %s: fork from %s: %w (%s)", z.cfg.ID, z.parent.cfg.ID, err, inc.tail.wait(100*time.Millisecond))
	}
	inc.stop = func() { _ = inst.Close() }
	go func() {
		st, werr := inst.Wait(context.Background())
		z.log.Info().Str("zygote", z.cfg.ID).Int("code", st.Code).Int("signal", int(st.Signal)).AnErr("error", werr).Msg("zygote exited")
		close(inc.done)
	}()
	return inc, nil
}

// current returns the running incarnation or ErrZygote.
func (z *Zygote) current() (*incarnation, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	switch {
	case z.closed:
		return nil, fmt.Errorf("zygote %s: closed: %w", z.cfg.ID, ErrZygote)
	case z.cur == nil:
		return nil, fmt.Errorf("zygote %s: not running: %w", z.cfg.ID, ErrZygote)
	case !z.cur.alive():
		return z.cur, fmt.Errorf("zygote %s: process exited: %w", z.cfg.ID, ErrZygote)
	}
	return z.cur, nil
}

func (z *Zygote) isClosed() bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.closed
}

// Restart replaces the zygote's process and sandbox with fresh ones.
func (z *Zygote) Restart(ctx context.Context) error {
	z.mu.Lock()
	inc := z.cur
	z.mu.Unlock()
	return z.restartFrom(ctx, inc)
}

// restartFrom restarts unless another caller already replaced failed.
func (z *Zygote) restartFrom(ctx context.Context, failed *incarnation) error {
	z.restartMu.Lock()
	defer z.restartMu.Unlock()
	z.mu.Lock()
	if z.closed {
		z.mu.Unlock()
		return fmt.Errorf("zygote %s: closed: %w", z.cfg.ID, ErrZygote)
	}
	old := z.cur
	if old != failed && old != nil && old.alive() {
		z.mu.Unlock()
		return nil // someone else restarted it already
	}
	z.cur = nil
	z.mu.Unlock()
	if old != nil {
		if err := old.shutdown(ctx); err != nil {
			z.log.Warn().Str("zygote", z.cfg.ID).Err(err).Msg("tear down dead zygote")
		}
	}
	if z.parent != nil && !z.parent.Alive() {
		if err := z.parent.Restart(ctx); err != nil {
			return fmt.Errorf("zygote %s: restart parent: %w", z.cfg.ID, err)
		}
	}
	inc, err := z.launch(ctx)
	if err != nil {
		return err
	}
	z.mu.Lock()
	z.cur = inc
	z.mu.Unlock()
	z.log.Info().Str("zygote", z.cfg.ID).Msg("zygote restarted")
	return nil
}

func (inc *incarnation) shutdown(ctx context.Context) error {
	inc.stop()
	err := inc.sb.Destroy(ctx)
	select {
	case <-inc.done:
	case <-ctx.Done():
		return errors.Join(err, ctx.Err())
	}
	return err
}

// Close stops the zygote and destroys its sandbox. Instances it forked are
// not touched: they belong to their own sandboxes.
func (z *Zygote) Close(ctx context.Context) error {
	z.restartMu.Lock()
	defer z.restartMu.Unlock()
	z.mu.Lock()
	if z.closed {
		z.mu.Unlock()
		return nil
	}
	z.closed = true
	inc := z.cur
	z.cur = nil
	z.mu.Unlock()
	if inc == nil {
		return nil
	}
	if err := inc.shutdown(ctx); err != nil {
		return fmt.Errorf("close zygote %s: %w", z.cfg.ID, err)
	}
	return nil
}

// Fork forks a child into sb as req says and returns once it is ready: for
// KindExec once the program was executed, for KindServe and KindZygote once
// its socket listens. The child is recorded in sb (lean's Adopt), so that
// sb.Info lists it and sb.Destroy kills it.
//
// Errors: a *ForkError when the child failed a setup step (not worth a
// retry); ErrZygote when the zygote itself failed (restart it and retry);
// sandbox.ErrState when sb is destroyed; ctx's error when ctx ended (the
// child, if any, is killed).
func (z *Zygote) Fork(ctx context.Context, sb *lean.Sandbox, req ForkRequest) (*Instance, error) {
	return z.fork(ctx, sb, req, forkOpts{})
}

// forkOpts are what package-internal callers add to a fork.
type forkOpts struct {
	paths     []string // sys.path additions for a child zygote
	afterExit func()   // see Instance.afterExit
}

func (z *Zygote) fork(ctx context.Context, sb *lean.Sandbox, req ForkRequest, o forkOpts) (_ *Instance, err error) {
	tr := newForkTracer()
	inc, err := z.current()
	if err != nil {
		return nil, err
	}
	switch req.Kind {
	case KindExec:
		if len(req.Argv) == 0 || req.Argv[0] == "" {
			return nil, fmt.Errorf("fork: empty argv: %w", sandbox.ErrInvalid)
		}
	case KindServe:
		if req.Function == nil || !strings.HasPrefix(req.Function.Socket, fsbind.ScratchDir+"/") {
			return nil, fmt.Errorf("fork: a serve child needs a function socket under %s: %w", fsbind.ScratchDir, sandbox.ErrInvalid)
		}
	case KindZygote:
	default:
		return nil, fmt.Errorf("fork: unknown kind %q: %w", req.Kind, sandbox.ErrInvalid)
	}
	if req.Kind != KindZygote && (req.UID == 0 || req.GID == 0) && !req.AllowRoot {
		return nil, fmt.Errorf("fork: uid/gid 0 for a %s child needs AllowRoot (give each instance its own uid, see UIDPool): %w", req.Kind, sandbox.ErrInvalid)
	}
	msg := request{
		Op: "fork", Kind: req.Kind, UID: req.UID, GID: req.GID, Hostname: req.Hostname,
		PIDNS: req.PIDNamespace, NewNet: req.PrivateNet,
	}
	body := requestBody{
		Dir: req.Dir, Env: req.Env, Argv: req.Argv, Function: req.Function,
		Packages: req.Packages, Paths: o.paths,
	}
	if body.Env == nil {
		body.Env = []string{}
	}
	if req.Kind == KindZygote {
		msg.UID, msg.GID, body.Socket = 0, 0, Socket
	}
	timeout := req.Timeout
	if timeout == 0 {
		timeout = DefaultReadyTimeout
	}
	msg.TimeoutMS = timeout.Milliseconds()
	msg.Trace = tr != nil

	// Descriptors: closed here once sent; the kernel keeps them in flight.
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var fds []int
	add := func(name string, f *os.File, own bool) {
		msg.FDs = append(msg.FDs, name)
		fds = append(fds, int(f.Fd()))
		if own {
			files = append(files, f)
		}
	}
	root, err := sb.CloneRoot()
	if err != nil {
		return nil, fmt.Errorf("fork into %s: %w", sb.ID(), err)
	}
	add("root", root, true)
	bodyFile, err := writeBody(&body)
	if err != nil {
		return nil, fmt.Errorf("fork into %s: %w", sb.ID(), err)
	}
	add("body", bodyFile, true)
	tr.mark("go_clone_root")
	procs, err := sb.OpenCgroupProcs()
	if err != nil {
		return nil, fmt.Errorf("fork into %s: %w", sb.ID(), err)
	}
	for _, f := range procs {
		add("cgroup", f, true)
	}
	tr.mark("go_cgroup_open")
	if req.NetNS != "" {
		f, err := os.Open(req.NetNS)
		if err != nil {
			return nil, fmt.Errorf("fork into %s: network namespace: %w", sb.ID(), err)
		}
		add("netns", f, true)
	}
	var devNull *os.File
	for _, s := range []struct {
		name string
		f    *os.File
	}{{"stdin", req.Stdin}, {"stdout", req.Stdout}, {"stderr", req.Stderr}} {
		if s.f != nil {
			add(s.name, s.f, false)
			continue
		}
		if devNull == nil {
			if devNull, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
				return nil, fmt.Errorf("fork into %s: %w", sb.ID(), err)
			}
			files = append(files, devNull)
		}
		add(s.name, devNull, false)
	}
	payload, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("fork into %s: %w", sb.ID(), err)
	}
	tr.mark("go_marshal")
	var oomBefore uint64
	if st, err := sb.Stats(ctx); err == nil {
		oomBefore = st.OOMKills
	}
	tr.mark("go_stats")

	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: inc.sock, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("zygote %s: connect: %v: %w", z.cfg.ID, err, ErrZygote)
	}
	defer func() {
		if err != nil {
			conn.Close() // the zygote kills the child, if there is one
			if errors.Is(err, ErrZygote) {
				// The zygote may be dead and so unable to kill what it
				// forked: a child that had not set its parent-death
				// signal yet, or had cleared it. Nothing it left may
				// meet a retry into the same sandbox.
				killStrays(sb, nil, time.Second)
			}
		}
	}()
	tr.mark("go_dial")
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, _, err := conn.WriteMsgUnix(payload, unix.UnixRights(fds...), nil); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("zygote %s: send: %v: %w", z.cfg.ID, err, ErrZygote)
	}
	for _, f := range files {
		f.Close()
	}
	files = nil
	tr.mark("go_sent")
	r, err := readReply(conn)
	tr.mark("go_reply")
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("zygote %s: %v: %w", z.cfg.ID, err, ErrZygote)
	}
	if !r.OK {
		step, m, ok := strings.Cut(r.Error, ": ")
		if !ok {
			step, m = "fork", r.Error
		}
		if strings.HasPrefix(step, "request") || step == "fork" {
			return nil, fmt.Errorf("zygote %s: %s: %w", z.cfg.ID, r.Error, ErrZygote)
		}
		return nil, &ForkError{Step: step, Msg: m}
	}
	if !stop() {
		return nil, ctx.Err()
	}
	_ = conn.SetDeadline(time.Time{})
	// The pid is the zygote's word: make sure it names a process in sb
	// before holding (and later signalling) it.
	pidfd, err := openInSandbox(r.Pid, sb)
	if err != nil {
		return nil, fmt.Errorf("zygote %s: %v: %w", z.cfg.ID, err, ErrZygote)
	}
	inst := newInstance(r.Pid, pidfd, conn, sb, oomBefore)
	inst.afterExit = o.afterExit
	// Recorded even when it is gone already: it was in sb, or never became
	// any other process (see openInSandbox).
	sb.Adopt(r.Pid)
	go inst.watch()
	tr.mark("go_done")
	tr.finish(z, r.Trace)
	return inst, nil
}

// readReply reads one message from the zygote.
func readReply(conn *net.UnixConn) (reply, error) {
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return reply{}, errors.New("connection closed before a reply (zygote died?)")
		}
		return reply{}, err
	}
	if n == 0 {
		return reply{}, errors.New("connection closed before a reply (zygote died?)")
	}
	var r reply
	if err := json.Unmarshal(buf[:n], &r); err != nil {
		return reply{}, fmt.Errorf("bad reply %q: %w", buf[:n], err)
	}
	return r, nil
}

// lineTail logs a zygote's stderr line by line and keeps the last lines
// for error reports.
type lineTail struct {
	log  zerolog.Logger
	id   string
	mu   sync.Mutex
	last []string
	done chan struct{}
}

func newLineTail(log zerolog.Logger, id string) *lineTail {
	return &lineTail{log: log, id: id, done: make(chan struct{})}
}

func (t *lineTail) consume(r *os.File) {
	defer close(t.done)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		t.log.Warn().Str("zygote", t.id).Msg(line)
		t.mu.Lock()
		t.last = append(t.last, line)
		if len(t.last) > 20 {
			t.last = t.last[len(t.last)-20:]
		}
		t.mu.Unlock()
	}
}

// wait waits up to d for the stream to end and returns its last lines.
func (t *lineTail) wait(d time.Duration) string {
	select {
	case <-t.done:
	case <-time.After(d):
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.last) == 0 {
		return "no output on stderr"
	}
	return "stderr: " + strings.Join(t.last, " | ")
}
