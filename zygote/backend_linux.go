package zygote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
)

var (
	_ sandbox.Backend = (*Backend)(nil)
	_ sandbox.Sandbox = (*Sandbox)(nil)
)

// Backend is a sandbox.Backend whose sandboxes are lean sandboxes and whose
// processes are forked from one root zygote in exec mode instead of being
// started by lean's init helper. It exists so that the lean conformance
// suite can check zygote-forked processes, and for callers that want
// exec-style processes at fork cost.
//
// Users and PID namespaces:
//   - A sandbox whose Spec has NSPID (the default) runs each process in a
//     new PID namespace (ForkRequest.PIDNamespace), as sandbox.DefaultUser
//     unless ProcessSpec.User says otherwise: the lean semantics exactly.
//   - A sandbox without NSPID gets its own uid from the backend's UIDPool at
//     Create (its scratch directory is chowned to it), and processes run as
//     that uid unless ProcessSpec.User says otherwise: /proc's
//     hidepid=invisible and the distinct uid are then what keep it apart.
//     A ProcessSpec.User given for such a sandbox must be unique to it, or
//     the sandboxes sharing the uid can see and signal each other.
//
// Every process started in one sandbox shares its cgroup, root, hostname
// and uid; each gets its own mount (and PID) namespace. The backend owns
// the lean backend it was given: Close closes it.
type Backend struct {
	lean *lean.Backend
	z    *Zygote
	uids *UIDPool

	mu     sync.Mutex
	live   map[string]*Sandbox
	closed bool
}

// NewBackend starts a root zygote (cfg) on lb and returns the backend.
// cfg.Packages is usually empty: exec'd programs gain nothing from them.
func NewBackend(ctx context.Context, lb *lean.Backend, cfg Config) (*Backend, error) {
	z, err := Start(ctx, lb, cfg)
	if err != nil {
		return nil, err
	}
	return &Backend{lean: lb, z: z, uids: NewUIDPool(DefaultUIDBase, DefaultUIDs), live: map[string]*Sandbox{}}, nil
}

// Name implements sandbox.Backend.
func (b *Backend) Name() string { return "zygote" }

// Zygote is the backend's root zygote.
func (b *Backend) Zygote() *Zygote { return b.z }

// Create implements sandbox.Backend.
func (b *Backend) Create(ctx context.Context, id string, spec sandbox.Spec) (sandbox.Sandbox, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("create %q: backend closed: %w", id, sandbox.ErrState)
	}
	sbx, err := b.lean.Create(ctx, id, spec)
	if err != nil {
		return nil, err
	}
	s := &Sandbox{b: b, lean: sbx.(*lean.Sandbox), spec: spec, insts: map[*Instance]bool{}}
	if s.spec.Namespaces == 0 {
		s.spec.Namespaces = sandbox.DefaultNamespaces
	}
	if s.spec.Hostname == "" {
		s.spec.Hostname = id
	}
	if !s.spec.Namespaces.Has(sandbox.NSPID) {
		uid, err := b.uids.Get()
		if err == nil {
			err = os.Chown(s.lean.Scratch(), int(uid), int(uid))
			if err != nil {
				b.uids.Put(uid)
			}
		}
		if err != nil {
			_ = s.lean.Destroy(ctx)
			return nil, fmt.Errorf("create %q: %w", id, err)
		}
		s.uid = &sandbox.User{UID: uid, GID: uid}
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		_ = s.Destroy(ctx)
		return nil, fmt.Errorf("create %q: backend closed: %w", id, sandbox.ErrState)
	}
	b.live[id] = s
	b.mu.Unlock()
	return s, nil
}

// Close implements sandbox.Backend: it destroys every sandbox, stops the
// zygote and closes the lean backend.
func (b *Backend) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	live := make([]*Sandbox, 0, len(b.live))
	for _, s := range b.live {
		live = append(live, s)
	}
	b.mu.Unlock()
	var errs []error
	for _, s := range live {
		if err := s.Destroy(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.z.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := b.lean.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Sandbox is a lean sandbox whose processes are forked from the backend's
// zygote.
type Sandbox struct {
	b    *Backend
	lean *lean.Sandbox
	spec sandbox.Spec
	uid  *sandbox.User // the pool uid, for sandboxes without NSPID

	mu        sync.Mutex
	insts     map[*Instance]bool
	paused    bool
	destroyed bool
}

// ID implements sandbox.Sandbox.
func (s *Sandbox) ID() string { return s.lean.ID() }

// Lean is the underlying lean sandbox.
func (s *Sandbox) Lean() *lean.Sandbox { return s.lean }

// Info implements sandbox.Sandbox.
func (s *Sandbox) Info() sandbox.Info {
	info := s.lean.Info()
	info.Backend = s.b.Name()
	return info
}

// Start implements sandbox.Sandbox by forking from the zygote. A fork that
// fails because of the zygote (not the program) is retried once on a
// restarted zygote.
func (s *Sandbox) Start(ctx context.Context, p sandbox.ProcessSpec) (sandbox.Process, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("start in %q: %w", s.ID(), err)
	}
	s.mu.Lock()
	switch {
	case s.destroyed:
		s.mu.Unlock()
		return nil, fmt.Errorf("start in %q: destroyed: %w", s.ID(), sandbox.ErrState)
	case s.paused:
		s.mu.Unlock()
		return nil, fmt.Errorf("start in %q: paused: %w", s.ID(), sandbox.ErrState)
	}
	s.mu.Unlock()

	user := sandbox.DefaultUser
	if s.uid != nil {
		user = *s.uid
	}
	if p.User != nil {
		user = *p.User
	}
	env := p.Env
	if env == nil {
		env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"}
	}
	io, err := newStdio(p.Stdin, p.Stdout, p.Stderr)
	if err != nil {
		return nil, fmt.Errorf("start in %q: %w", s.ID(), err)
	}
	req := ForkRequest{
		Kind: KindExec, Argv: p.Args, Env: env, Dir: p.Dir, UID: user.UID, GID: user.GID,
		AllowRoot: p.User != nil, // root only when the caller asked for it by name
		Hostname:  s.spec.Hostname, NetNS: s.spec.NetNS, PrivateNet: s.spec.Namespaces.Has(sandbox.NSNet),
		PIDNamespace: s.spec.Namespaces.Has(sandbox.NSPID),
		Stdin:        io.child[0], Stdout: io.child[1], Stderr: io.child[2],
	}
	o := forkOpts{afterExit: io.drain}
	inst, err := s.b.z.fork(ctx, s.lean, req, o)
	if errors.Is(err, ErrZygote) && ctx.Err() == nil {
		if rerr := s.b.z.Restart(ctx); rerr == nil {
			inst, err = s.b.z.fork(ctx, s.lean, req, o)
		}
	}
	io.closeChildEnds()
	if err != nil {
		io.abort()
		s.settleFailedFork()
		var fe *ForkError
		if errors.As(err, &fe) && errors.Is(err, sandbox.ErrNotFound) {
			return nil, fmt.Errorf("start %q in %q: %w: %w", p.Args[0], s.ID(), sandbox.ErrNotFound, err)
		}
		return nil, fmt.Errorf("start %q in %q: %w", p.Args[0], s.ID(), err)
	}
	s.mu.Lock()
	s.insts[inst] = true
	s.mu.Unlock()
	return inst, nil
}

// Pause implements sandbox.Sandbox.
func (s *Sandbox) Pause(ctx context.Context) error {
	if err := s.lean.Pause(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	s.paused = true
	s.mu.Unlock()
	return nil
}

// Unpause implements sandbox.Sandbox.
func (s *Sandbox) Unpause(ctx context.Context) error {
	if err := s.lean.Unpause(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	s.paused = false
	s.mu.Unlock()
	return nil
}

// Stats implements sandbox.Sandbox.
func (s *Sandbox) Stats(ctx context.Context) (sandbox.Stats, error) { return s.lean.Stats(ctx) }

// Destroy implements sandbox.Sandbox: lean's Destroy kills everything in
// the cgroup; then it waits until the zygote has reaped every process (its
// children, and orphans it adopted as subreaper), so no zombie outlives it.
func (s *Sandbox) Destroy(ctx context.Context) error {
	s.mu.Lock()
	if s.destroyed {
		s.mu.Unlock()
		return nil
	}
	s.destroyed = true
	insts := make([]*Instance, 0, len(s.insts))
	for i := range s.insts {
		insts = append(insts, i)
	}
	s.mu.Unlock()
	procs := members(s.lean.Info())
	err := s.lean.Destroy(ctx)
	for _, i := range insts {
		select {
		case <-i.done:
		case <-ctx.Done():
			err = errors.Join(err, fmt.Errorf("destroy %q: wait for pid %d: %w", s.ID(), i.pid, ctx.Err()))
		}
	}
	if werr := waitGone(ctx, procs); werr != nil {
		err = errors.Join(err, fmt.Errorf("destroy %q: %w", s.ID(), werr))
	}
	if s.uid != nil {
		s.b.uids.Put(s.uid.UID)
	}
	s.b.mu.Lock()
	delete(s.b.live, s.ID())
	s.b.mu.Unlock()
	return err
}

// members maps the pids of a sandbox (started and in its cgroups) to their
// start times.
func members(info sandbox.Info) map[int]string {
	out := map[int]string{}
	pids := append([]int(nil), info.Pids...)
	for _, dir := range info.Cgroups {
		pids = append(pids, readProcs(filepath.Join(dir, "cgroup.procs"))...)
	}
	for _, pid := range pids {
		if st, ok := startTime(pid); ok {
			out[pid] = st
		}
	}
	return out
}

// startTime reads a process's start time (field 22 of /proc/PID/stat).
func startTime(pid int) (string, bool) { return startOf(procStat(pid)) }

// settleFailedFork makes sure a fork that failed left nothing in the
// sandbox when Start returns: strays (the fork's child, a PID namespace's
// reaper orphaned to the zygote) that are no live instance are killed, and
// each is waited for until the zygote has reaped it; for at most two
// seconds.
func (s *Sandbox) settleFailedFork() {
	s.mu.Lock()
	live := map[int]bool{}
	for i := range s.insts {
		live[i.pid] = true
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = waitGone(ctx, killStrays(s.lean, live, 2*time.Second))
}

// waitGone polls until none of procs exists any more (zombies included).
func waitGone(ctx context.Context, procs map[int]string) error {
	for pid, started := range procs {
		for {
			if st, ok := startTime(pid); !ok || st != started {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("pid %d not reaped: %w", pid, ctx.Err())
			case <-time.After(time.Millisecond):
			}
		}
	}
	return nil
}

// stdio connects a ProcessSpec's readers and writers to files for a child:
// *os.File as is, nil as /dev/null (Fork's default), anything else through
// a pipe copied by a goroutine.
type stdio struct {
	child  [3]*os.File
	owned  []*os.File // child ends to close after the fork
	reads  []*os.File // parent ends of output pipes
	stdinW *os.File
	copies sync.WaitGroup
}

// drainGrace bounds how long Wait waits for output after the process
// exited: a background process that inherited the pipe may hold it open.
const drainGrace = 2 * time.Second

func newStdio(in io.Reader, out, errw io.Writer) (*stdio, error) {
	s := &stdio{}
	if in != nil {
		if f, ok := in.(*os.File); ok {
			s.child[0] = f
		} else {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			s.child[0], s.stdinW = r, w
			s.owned = append(s.owned, r)
			go func() {
				_, _ = io.Copy(w, in)
				_ = w.Close()
			}()
		}
	}
	for i, wr := range []io.Writer{out, errw} {
		if wr == nil {
			continue
		}
		if f, ok := wr.(*os.File); ok {
			s.child[i+1] = f
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			s.closeChildEnds()
			s.abort()
			return nil, err
		}
		s.child[i+1] = w
		s.owned = append(s.owned, w)
		s.reads = append(s.reads, r)
		s.copies.Add(1)
		go func() {
			defer s.copies.Done()
			_, _ = io.Copy(wr, r)
		}()
	}
	return s, nil
}

func (s *stdio) closeChildEnds() {
	for _, f := range s.owned {
		f.Close()
	}
	s.owned = nil
}

// abort stops the copies after a failed fork.
func (s *stdio) abort() {
	if s.stdinW != nil {
		_ = s.stdinW.Close()
	}
	s.drain()
}

// drain waits for the output copies, up to drainGrace, then cuts them off.
func (s *stdio) drain() {
	done := make(chan struct{})
	go func() { s.copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainGrace):
	}
	for _, r := range s.reads {
		r.Close()
	}
	<-done
}
