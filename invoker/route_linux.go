//go:build linux

package invoker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/netns"
	"github.com/sockfaas/sockfaas/pool"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/zygote"
)

// Routing constants.
const (
	// ColdStartTimeout bounds building an instance (a fork or a fresh
	// start, and the handler module's import), like AWS Lambda's init
	// phase. The function's timeout bounds only the call itself.
	ColdStartTimeout = 10 * time.Second
	// instancePids caps an instance's tasks: a fork bomb stops there.
	instancePids = 1024
	// codeMount is where a function's code appears in its sandbox.
	codeMount = "/code"
	// instanceSocket is where a serving instance listens, in its scratch.
	instanceSocket = fsbind.ScratchDir + "/fn.sock"
	// crashGrace is how long a failed call waits for the instance's exit
	// status, to say how it ended.
	crashGrace = 200 * time.Millisecond
)

// genericLimits are the cgroup limits of generic sandboxes. A cgroup's
// limits are set when the sandbox is created, before anyone knows which
// function it will serve, so cached sandboxes carry the most common
// limits: AWS Lambda's default 128 MiB and no CPU quota. A function whose
// manifest asks for anything else gets a sandbox created for it on its
// cold start (same steps, about a millisecond more).
var genericLimits = sandbox.Limits{MemoryBytes: DefaultMemoryMB << 20, Pids: instancePids}

func functionLimits(fn *Function) sandbox.Limits {
	mb := fn.Manifest.MemoryMB
	if mb == 0 {
		mb = DefaultMemoryMB
	}
	return sandbox.Limits{MemoryBytes: int64(mb) << 20, CPUMillis: int64(fn.Manifest.CPUMillis), Pids: instancePids}
}

// fnKey is the handler cache key of a function version: "<name>@<version>"
// and the version's creation time, because a name that is removed and
// deployed again starts at version 1 again.
func fnKey(fn *Function) string {
	return fn.Name + "@" + strconv.Itoa(fn.Version) + "#" + strconv.FormatInt(fn.Created.UnixNano(), 36)
}

// isCurrent reports whether key is the newest deployed version of name.
func (iv *Invoker) isCurrent(name, key string) bool {
	cur, ok := iv.reg.current(name)
	return ok && fnKey(cur) == key
}

// Invoke implements Service. See the package documentation for the route.
// A function not deployed here, or a call this host has no room for, goes
// to the upstream (see WithUpstream), unless the upstream delivered it.
func (iv *Invoker) Invoke(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error) {
	if len(payload) > MaxPayloadBytes {
		return nil, fmt.Errorf("invoke %q: %w: payload of %d bytes, the limit is %d", name, ErrTooLarge, len(payload), MaxPayloadBytes)
	}
	tr := traceFrom(ctx)
	if tr != nil && !tr.Deadline.IsZero() {
		if !time.Now().Before(tr.Deadline) {
			return nil, fmt.Errorf("invoke %q: %w: the caller %s has no time left", name, ErrTimeout, tr.Caller)
		}
		// Waiting for a slot or a cold start must not outlive the caller
		// either; the call itself is cut at tr.Deadline by run, a little
		// earlier, so that it ends as a timeout of the callee.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, tr.Deadline.Add(CallReserve/2))
		defer cancel()
	}
	if err := iv.enter(); err != nil {
		return nil, fmt.Errorf("invoke %q: invoker closed: %w", name, err)
	}
	defer iv.inflight.Done()
	fn, ok := iv.reg.current(name)
	if !ok {
		if iv.passesOn(ctx, tr) {
			return iv.local.upstream.Invoke(ctx, name, payload, tr)
		}
		return nil, errNotFound(name)
	}
	key := fnKey(fn)
	release, err := iv.admit(ctx, fn, key)
	if err != nil {
		if errors.Is(err, ErrOverloaded) && ctx.Err() == nil && iv.passesOn(ctx, nil) {
			res, uerr := iv.local.upstream.Offload(ctx, name, payload, tr)
			switch {
			case uerr == nil:
				return res, nil
			case !errors.Is(uerr, ErrOverloaded) && !errors.Is(uerr, ErrNotFound) && !errors.Is(uerr, ErrUnavailable):
				return nil, uerr // it ran elsewhere and failed there
			}
		}
		return nil, fmt.Errorf("invoke %q: %w", name, err)
	}
	defer release()
	return iv.run(ctx, fn, key, payload, o)
}

// admit takes a slot of the function (key: fnKey(fn)) and one of the
// invoker. A request that finds none free waits, if fewer than the queue's
// size wait already, until it gets them or its ctx ends; otherwise it is
// refused with ErrOverloaded. The function's slot is taken first, so requests for a
// function at its limit do not hold global slots others could use.
func (iv *Invoker) admit(ctx context.Context, fn *Function, key string) (func(), error) {
	fnSlots := iv.slotsOf(fn, key)
	release := func() { <-iv.global; <-fnSlots }
	gotFn := tryTake(fnSlots)
	if gotFn && tryTake(iv.global) {
		return release, nil
	}
	if iv.waiting.Add(1) > int64(iv.cfg.queue) {
		iv.waiting.Add(-1)
		if gotFn {
			<-fnSlots
		}
		return nil, fmt.Errorf("%w: %d requests waiting", ErrOverloaded, iv.cfg.queue)
	}
	defer iv.waiting.Add(-1)
	if !gotFn {
		select {
		case fnSlots <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: gave up waiting for a slot: %w", ErrOverloaded, ctx.Err())
		case <-iv.closing:
			return nil, fmt.Errorf("invoker closed: %w", ErrClosed)
		}
	}
	select {
	case iv.global <- struct{}{}:
		return release, nil
	case <-ctx.Done():
		<-fnSlots
		return nil, fmt.Errorf("%w: gave up waiting for a slot: %w", ErrOverloaded, ctx.Err())
	case <-iv.closing:
		<-fnSlots
		return nil, fmt.Errorf("invoker closed: %w", ErrClosed)
	}
}

func tryTake(c chan struct{}) bool {
	select {
	case c <- struct{}{}:
		return true
	default:
		return false
	}
}

// slotsOf returns the semaphore of fn's version (key: fnKey(fn)).
func (iv *Invoker) slotsOf(fn *Function, key string) chan struct{} {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	c := iv.slots[key]
	if c == nil {
		n := fn.Manifest.MaxConcurrency
		if n <= 0 {
			n = DefaultFunctionConcurrency
		}
		c = make(chan struct{}, n)
		iv.slots[key] = c
	}
	return c
}

// run calls fn (key: fnKey(fn)) on an instance: a cached one, or one
// built now.
func (iv *Invoker) run(ctx context.Context, fn *Function, key string, payload []byte, o InvokeOptions) (*Result, error) {
	timeout := fn.Manifest.Timeout()
	if o.Timeout > 0 && o.Timeout < timeout {
		timeout = o.Timeout
	}
	reqID := o.RequestID
	if reqID == "" {
		reqID = newRequestID()
	}
	begin := time.Now()
	lease, inst, start, err := iv.acquire(ctx, fn, key)
	if err != nil {
		var fe *zygote.ForkError
		if errors.As(err, &fe) && fe.Step == "load" {
			// The handler does not import: what AWS Lambda reports as an
			// Unhandled function error.
			return &Result{RequestID: reqID, Payload: loadErrorPayload(fe.Msg), FunctionError: true,
				Start: "cold", Duration: time.Since(begin)}, nil
		}
		return nil, fmt.Errorf("invoke %q: start an instance: %w", fn.Name, err)
	}
	started := time.Since(begin)
	inst.state.Store(stateBusy)
	inst.invocations.Add(1)

	deadline := time.Now().Add(timeout)
	tr := traceFrom(ctx)
	if tr != nil && !tr.Deadline.IsZero() && tr.Deadline.Before(deadline) {
		// A call from a function: the callee gets what is left of the
		// caller's time, and times out as itself.
		deadline = tr.Deadline
		if timeout = time.Until(deadline); timeout <= 0 {
			inst.state.Store(stateIdle)
			lease.Release(true)
			return nil, fmt.Errorf("invoke %q: %w", fn.Name, &TimeoutError{Function: fn.Name, Timeout: 0})
		}
	}
	inst.call.Store(newCallState(fn.Name, fn.Version, reqID, deadline, tr))
	runCtx, cancel := context.WithDeadline(ctx, deadline)
	res, err := inst.client.Invoke(runCtx, zygote.InvokeRequest{Payload: payload, RequestID: reqID, Deadline: deadline})
	cancel()
	if err != nil {
		inst.state.Store(stateIdle)
		lease.Release(false)
		// The client's socket deadline may fire a little before runCtx's
		// timer: judge by the clock, and by whose deadline came first.
		callerFirst := false
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			callerFirst = true
		}
		expired := errors.Is(err, context.DeadlineExceeded) || !time.Now().Before(deadline)
		switch {
		case expired && !callerFirst && !errors.Is(ctx.Err(), context.Canceled):
			iv.log.Debug().Str("func", fn.Name).Str("sandbox", inst.id).Dur("dur", timeout).Msg("timed out; instance killed")
			return nil, fmt.Errorf("invoke %q: %w", fn.Name, &TimeoutError{Function: fn.Name, Timeout: timeout})
		case ctx.Err() != nil:
			return nil, fmt.Errorf("invoke %q: %w", fn.Name, ctx.Err())
		default:
			how := inst.exitDescription()
			iv.log.Info().Str("func", fn.Name).Str("sandbox", inst.id).Str("exit", how).Err(err).Msg("instance crashed")
			return nil, fmt.Errorf("invoke %q: %w (%s): %v", fn.Name, ErrFunctionCrashed, how, err)
		}
	}
	inst.state.Store(stateIdle)
	// Back to the cache only while key is still the function's current
	// version: a redeploy or a Remove that raced this call (say, during its
	// cold start) must not leave an old instance cached.
	lease.Release(!iv.isRetired(key) && iv.isCurrent(fn.Name, key))
	out := &Result{RequestID: reqID, Payload: res.Payload, FunctionError: res.FunctionError, Start: start,
		Duration: time.Since(begin), StartDuration: started}
	switch {
	case res.Status == 200 || res.FunctionError:
	case res.Status == 400:
		return nil, fmt.Errorf("invoke %q: %w: %s", fn.Name, ErrInvalid, errorMessage(res.Payload))
	case res.Status == 413:
		return nil, fmt.Errorf("invoke %q: %w: %s", fn.Name, ErrTooLarge, errorMessage(res.Payload))
	default:
		out.FunctionError = true
	}
	if e := iv.log.Debug(); e.Enabled() {
		e.Str("func", fn.Name).Str("sandbox", inst.id).Str("start", start).Dur("dur", out.Duration).Bool("error", out.FunctionError).Msg("invoked")
	}
	return out, nil
}

// acquire leases an instance of fn: warm, paused, or built now.
func (iv *Invoker) acquire(ctx context.Context, fn *Function, key string) (*pool.Lease, *instance, string, error) {
	for {
		lease, err := iv.handlers.Acquire(ctx, key)
		if errors.Is(err, pool.ErrMiss) {
			break
		}
		if err != nil {
			return nil, nil, "", err
		}
		inst := lease.Instance().(*instance)
		if inst.exited() {
			// Died while idle (OOM killer, a thread that outlived its
			// call): the request has not been sent, so try the next.
			lease.Release(false)
			continue
		}
		return lease, inst, lease.Start().String(), nil
	}
	cctx, cancel := context.WithTimeout(ctx, ColdStartTimeout)
	defer cancel()
	inst, start, err := iv.build(cctx, fn, key)
	if err != nil {
		return nil, nil, "", err
	}
	return iv.handlers.Add(key, inst), inst, start, nil
}

// build makes a new instance of fn: a zygote fork into a generic (or
// purpose-made) sandbox, or, when that fails for a reason other than the
// function itself and the fallback is on, a fresh interpreter.
func (iv *Invoker) build(ctx context.Context, fn *Function, key string) (_ *instance, start string, err error) {
	uid, err := iv.uids.Get()
	if err != nil {
		return nil, "", err
	}
	inst := &instance{
		iv: iv, fn: fn, key: key, uid: uid, started: time.Now(),
		exit: make(chan struct{}), closed: make(chan struct{}),
	}
	defer func() {
		if err != nil {
			_ = inst.Close(context.Background())
		}
	}()
	logw, err := iv.logs.writer(fn.Name)
	if err != nil {
		return nil, "", err
	}
	nsPath, err := iv.attach(ctx, inst)
	if err != nil {
		return nil, "", err
	}
	if !iv.noZygote.Load() {
		err = iv.fork(ctx, inst, logw, nsPath)
		if err == nil {
			iv.register(inst)
			return inst, "cold", nil
		}
		var fe *zygote.ForkError
		if errors.As(err, &fe) || !iv.cfg.fresh || ctx.Err() != nil {
			return nil, "", err
		}
		iv.log.Warn().Err(err).Str("func", fn.Name).Msg("zygote fork failed; starting a fresh interpreter")
		inst.dropSandbox()
	} else if !iv.cfg.fresh {
		return nil, "", fmt.Errorf("no zygote and no fresh fallback: %w", zygote.ErrZygote)
	}
	if err = iv.startFresh(ctx, inst, logw, nsPath); err != nil {
		return nil, "", err
	}
	iv.register(inst)
	return inst, "fresh", nil
}

func (iv *Invoker) register(inst *instance) {
	iv.mu.Lock()
	iv.live[inst] = struct{}{}
	iv.mu.Unlock()
}

// attach gives inst its network per its manifest and returns the
// namespace file to join: "" keeps the zygote's private loopback-only
// namespace (no network manager).
func (iv *Invoker) attach(ctx context.Context, inst *instance) (string, error) {
	if iv.net == nil {
		return "", nil
	}
	m := inst.fn.Manifest
	var ports []netns.PortSpec
	for _, p := range m.Ports {
		ports = append(ports, netns.PortSpec{ContainerPort: p})
	}
	att, err := iv.net.Attach(ctx, m.Network, ports)
	if err != nil {
		return "", fmt.Errorf("network: %w", err)
	}
	inst.att = att
	if att.Mode() == netns.ModeHost {
		// The invoker's own namespace: an empty path would keep the
		// zygote's private one.
		return "/proc/self/ns/net", nil
	}
	return att.NSPath(), nil
}

func (iv *Invoker) newID() string { return "i" + strconv.FormatUint(iv.seq.Add(1), 36) }

// makeGeneric builds a generic sandbox: the runtime bound, /code ready
// for a function's code, the generic limits.
func (iv *Invoker) makeGeneric(ctx context.Context) (*lean.Sandbox, error) {
	return iv.createSandbox(ctx, iv.newID(), sandbox.Spec{
		Root: fsbind.Spec{
			Binds:       []fsbind.Bind{{Source: iv.runtimeDir, Dest: zygote.RuntimeDir}},
			MountPoints: []string{codeMount},
		},
		Limits: genericLimits,
	})
}

func (iv *Invoker) createSandbox(ctx context.Context, id string, spec sandbox.Spec) (*lean.Sandbox, error) {
	sb, err := iv.lean.Create(ctx, id, spec)
	if err != nil {
		return nil, err
	}
	return sb.(*lean.Sandbox), nil
}

// fork takes a sandbox (from the generic cache when fn's limits are the
// generic ones), binds fn's code into it and forks a serving instance
// from the tree's best zygote for fn's imports.
func (iv *Invoker) fork(ctx context.Context, inst *instance, logw *os.File, nsPath string) error {
	fn := inst.fn
	var sb *lean.Sandbox
	var err error
	if functionLimits(fn) == genericLimits {
		sb, _, err = iv.generic.Get(ctx)
	} else {
		sb, err = iv.createSandbox(ctx, iv.newID(), sandbox.Spec{
			Root: fsbind.Spec{
				Binds:       []fsbind.Bind{{Source: iv.runtimeDir, Dest: zygote.RuntimeDir}},
				MountPoints: []string{codeMount},
			},
			Limits: functionLimits(fn),
		})
	}
	if err != nil {
		return err
	}
	inst.sb, inst.id = sb, sb.ID()
	if err := sb.Bind(fn.Dir, codeMount); err != nil {
		return err
	}
	if err := os.Chown(sb.Scratch(), int(inst.uid), int(inst.uid)); err != nil {
		return fmt.Errorf("scratch of %s: %w", sb.ID(), err)
	}
	if err := iv.listenBus(inst, sb.Scratch()); err != nil {
		return err
	}
	zi, err := iv.tree.Fork(ctx, sb, fn.Imports, zygote.ForkRequest{
		Kind: zygote.KindServe,
		Function: &zygote.Function{
			Socket: instanceSocket, Dir: codeMount, Handler: fn.Manifest.Handler,
			Style: string(fn.Manifest.Style), Name: fn.Name, MemoryMB: fn.Manifest.MemoryMB,
		},
		Env: instanceEnv(fn, inst.id), Dir: codeMount,
		UID: inst.uid, GID: inst.uid, Hostname: fn.Name,
		NetNS: nsPath, Stdout: logw, Stderr: logw,
		Timeout: ColdStartTimeout,
	})
	if err != nil {
		return err
	}
	inst.zi, inst.pid = zi, zi.Pid()
	client, err := zygote.Dial(ctx, filepath.Join(sb.Scratch(), filepath.Base(instanceSocket)))
	if err != nil {
		return err
	}
	inst.client = client
	return nil
}

// startFresh starts a new interpreter running the instance server in a
// sandbox made for it: the slow path, for when no zygote can fork.
func (iv *Invoker) startFresh(ctx context.Context, inst *instance, logw *os.File, nsPath string) error {
	fn := inst.fn
	spec := sandbox.Spec{
		Root: fsbind.Spec{Binds: []fsbind.Bind{
			{Source: iv.runtimeDir, Dest: zygote.RuntimeDir},
			{Source: fn.Dir, Dest: codeMount},
		}},
		Limits: functionLimits(fn),
	}
	switch {
	case nsPath == "/proc/self/ns/net": // host mode: lean's default
	case nsPath != "":
		spec.NetNS = nsPath
	default:
		spec.Namespaces = sandbox.DefaultNamespaces | sandbox.NSNet
	}
	sb, err := iv.createSandbox(ctx, iv.newID(), spec)
	if err != nil {
		return err
	}
	inst.sb, inst.id = sb, sb.ID()
	if err := os.Chown(sb.Scratch(), int(inst.uid), int(inst.uid)); err != nil {
		return fmt.Errorf("scratch of %s: %w", sb.ID(), err)
	}
	if err := iv.listenBus(inst, sb.Scratch()); err != nil {
		return err
	}
	args := []string{zygote.Python, "-I", zygote.RuntimeDir + "/instance.py",
		"--socket", instanceSocket, "--dir", codeMount,
		"--handler", fn.Manifest.Handler, "--style", string(fn.Manifest.Style),
		"--name", fn.Name, "--memory-mb", strconv.Itoa(fn.Manifest.MemoryMB)}
	env := append(instanceEnv(fn, inst.id), "PYTHONUNBUFFERED=1",
		"OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "MKL_NUM_THREADS=1")
	proc, err := sb.Start(ctx, sandbox.ProcessSpec{
		Args: args, Env: env, Dir: codeMount,
		User:   &sandbox.User{UID: inst.uid, GID: inst.uid},
		Stdout: logw, Stderr: logw,
		// Handlers may leave orphans: an init reaps them.
		Init: true,
	})
	if err != nil {
		return err
	}
	inst.proc, inst.pid = proc, proc.Pid()
	readyCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = proc.Wait(context.Background())
		inst.markExit()
		cancel()
	}()
	sock := filepath.Join(sb.Scratch(), filepath.Base(instanceSocket))
	if err := zygote.WaitReady(readyCtx, sock); err != nil {
		if inst.exited() {
			return fmt.Errorf("fresh instance exited before serving (%s; see the function's logs): %w", inst.exitDescription(), sandbox.ErrNotFound)
		}
		return err
	}
	client, err := zygote.Dial(ctx, sock)
	if err != nil {
		return err
	}
	inst.client = client
	return nil
}

// instanceEnv is an instance's whole environment: a minimal base, the
// manifest's variables, then the Lambda ones (the manifest cannot set
// those: Validate reserves AWS_).
func instanceEnv(fn *Function, id string) []string {
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"}
	for k, v := range fn.Manifest.Environment {
		env = append(env, k+"="+v)
	}
	mb := fn.Manifest.MemoryMB
	if mb == 0 {
		mb = DefaultMemoryMB
	}
	return append(env,
		"AWS_LAMBDA_FUNCTION_NAME="+fn.Name,
		"AWS_LAMBDA_FUNCTION_VERSION="+strconv.Itoa(fn.Version),
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE="+strconv.Itoa(mb),
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/"+fn.Name,
		"AWS_LAMBDA_LOG_STREAM_NAME="+id,
	)
}

// loadErrorPayload turns a child's load failure ("Runtime.ImportModuleError:
// No module named 'x'") into Lambda's error JSON.
func loadErrorPayload(msg string) []byte {
	typ, text, ok := strings.Cut(msg, ": ")
	if !ok || strings.ContainsAny(typ, " \t") {
		typ, text = "Runtime.InitError", msg
	}
	b, _ := json.Marshal(map[string]any{"errorMessage": text, "errorType": typ, "stackTrace": []string{}})
	return b
}

// errorMessage picks errorMessage out of a Lambda error JSON.
func errorMessage(payload []byte) string {
	var e struct {
		ErrorMessage string `json:"errorMessage"`
	}
	if json.Unmarshal(payload, &e) == nil && e.ErrorMessage != "" {
		return e.ErrorMessage
	}
	return strings.TrimSpace(string(payload))
}

// Instance states for Status.
const (
	stateIdle int32 = iota
	stateBusy
	statePaused
)

// instance implements pool.Instance over one sandbox, the process serving
// the function in it (forked from a zygote, or fresh), the client talking
// to it, its network attachment and its uid.
type instance struct {
	iv  *Invoker
	fn  *Function
	key string
	id  string // the sandbox's ID
	uid uint32

	sb     *lean.Sandbox
	zi     *zygote.Instance // forked
	proc   sandbox.Process  // or fresh
	pid    int
	client *zygote.Client
	att    *netns.Attachment
	bus    *bus                      // the local queue's socket
	call   atomic.Pointer[callState] // the call served now (or last)

	started     time.Time
	invocations atomic.Uint64
	state       atomic.Int32 // stateIdle, stateBusy or statePaused

	exitOnce sync.Once
	exit     chan struct{} // closed once the serving process has exited

	closeOnce sync.Once
	closeErr  error
	closed    chan struct{}
}

var _ pool.Instance = (*instance)(nil)

// Pause implements pool.Instance: it freezes the sandbox's cgroup.
func (i *instance) Pause(ctx context.Context) error {
	if err := i.sb.Pause(ctx); err != nil {
		return err
	}
	i.state.Store(statePaused)
	return nil
}

// Unpause implements pool.Instance. A failed Pause thaws the cgroup
// itself, so only a successful one needs undoing.
func (i *instance) Unpause(ctx context.Context) error {
	if i.state.Load() != statePaused {
		return nil
	}
	if err := i.sb.Unpause(ctx); err != nil {
		return err
	}
	i.state.Store(stateIdle)
	return nil
}

// MemoryBytes implements pool.Instance: the sandbox cgroup's charge.
func (i *instance) MemoryBytes(ctx context.Context) (uint64, error) {
	if i.sb == nil {
		return 0, sandbox.ErrState
	}
	st, err := i.sb.Stats(ctx)
	if err != nil {
		return 0, err
	}
	return st.MemoryBytes, nil
}

// Close implements pool.Instance: it kills the process, destroys the
// sandbox (which kills anything else in its cgroup, frozen or not) and
// gives back the network and the uid. Only the first call acts; later ones
// return its result.
func (i *instance) Close(ctx context.Context) error {
	i.closeOnce.Do(func() {
		var errs []error
		if i.bus != nil {
			i.bus.close()
		}
		if i.client != nil {
			_ = i.client.Close()
		}
		if i.zi != nil {
			_ = i.zi.Close()
		}
		if i.proc != nil {
			_ = i.proc.Signal(syscall.SIGKILL)
		}
		if i.sb != nil {
			if err := i.sb.Destroy(ctx); err != nil {
				errs = append(errs, fmt.Errorf("instance %s: %w", i.id, err))
			}
		}
		if i.att != nil {
			if err := i.att.Release(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		// The uid is free only once nothing runs as it: Destroy made sure.
		if len(errs) == 0 {
			i.iv.uids.Put(i.uid)
		}
		i.closeErr = errors.Join(errs...)
		i.iv.forget(i)
		close(i.closed)
	})
	return i.closeErr
}

// dropSandbox destroys the sandbox of a failed fork, keeping the uid and
// the network for the fresh fallback.
func (i *instance) dropSandbox() {
	if i.bus != nil {
		i.bus.close()
		i.bus = nil
	}
	if i.client != nil {
		_ = i.client.Close()
		i.client = nil
	}
	if i.zi != nil {
		_ = i.zi.Close()
		i.zi = nil
	}
	if i.sb != nil {
		_ = i.sb.Destroy(context.Background())
		i.sb = nil
	}
	i.pid = 0
}

func (i *instance) markExit() { i.exitOnce.Do(func() { close(i.exit) }) }

func (i *instance) exited() bool {
	var done <-chan struct{} = i.exit
	if i.zi != nil {
		done = i.zi.Done()
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// exitDescription says how the serving process ended, waiting briefly for
// the news.
func (i *instance) exitDescription() string {
	var p sandbox.Process
	switch {
	case i.zi != nil:
		p = i.zi
	case i.proc != nil:
		p = i.proc
	default:
		return "no process"
	}
	ctx, cancel := context.WithTimeout(context.Background(), crashGrace)
	defer cancel()
	st, err := p.Wait(ctx)
	switch {
	case err != nil && ctx.Err() != nil:
		return "connection lost, process still running"
	case err != nil:
		return err.Error()
	case st.OOMKilled:
		return "killed by the OOM killer"
	case st.Signal != 0:
		return "killed by signal " + st.Signal.String()
	default:
		return "exit status " + strconv.Itoa(st.Code)
	}
}

func (i *instance) stateName() string {
	switch i.state.Load() {
	case stateBusy:
		return "busy"
	case statePaused:
		return "paused"
	}
	return "idle"
}
