//go:build linux

package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/benchmarks/peers"
	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/zygote"
)

// coldHandler is a handler under testdata/functions: what it imports (the
// requirements a zygote is chosen by) and what it returns for {}.
type coldHandler struct {
	name     string
	packages []string
	want     string // compact JSON
}

var coldHandlers = []coldHandler{
	{"hello", nil, `{"hello":"world"}`},
	{"numpy", []string{"numpy"}, `{"sum":499500}`},
	{"pandas", []string{"numpy", "pandas"}, `{"sum":18,"rows":3}`},
}

// instanceMemory is the memory limit of every function sandbox.
const instanceMemory = 256 << 20

// zygoteMemory is the memory limit of each zygote's own sandbox.
const zygoteMemory = 1 << 30

// instanceEnv is every instance's environment, forked or fresh. The
// single-thread BLAS settings are the zygotes' own defaults: without them a
// fresh numpy starts a thread per CPU, which a one-CPU instance does not want
// and which would make the comparison about thread pools.
var instanceEnv = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"}, threadEnv...)

// threadEnv is instanceEnv without PATH and HOME (which the peers' bundle
// sets itself).
var threadEnv = []string{"LANG=C.UTF-8", "OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1"}

// instanceSocket is where instances listen, inside their sandbox.
const instanceSocket = fsbind.ScratchDir + "/fn.sock"

// coldTimeout bounds one cold start: a stuck instance fails the benchmark
// instead of hanging it.
const coldTimeout = 30 * time.Second

var sandboxSeq atomic.Int64

// sandboxID is unique for the whole test binary, so concurrent and
// successive sub-benchmarks never reuse a live ID.
func sandboxID(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, sandboxSeq.Add(1))
}

// createFunctionSandbox makes a lean sandbox with the function's code
// read-only at /code (and more binds, if given) and instanceMemory as its
// limit.
func createFunctionSandbox(ctx context.Context, be *lean.Backend, id, code string, extra ...fsbind.Bind) (*lean.Sandbox, error) {
	binds := append([]fsbind.Bind{{Source: code, Dest: "/code"}}, extra...)
	sbx, err := be.Create(ctx, id, sandbox.Spec{
		Root:   fsbind.Spec{Binds: binds},
		Limits: sandbox.Limits{MemoryBytes: instanceMemory},
	})
	if err != nil {
		return nil, err
	}
	return sbx.(*lean.Sandbox), nil
}

// checkResult compares a handler's JSON output with the expected compact
// JSON.
func checkResult(got []byte, want string) error {
	var buf bytes.Buffer
	if err := json.Compact(&buf, bytes.TrimSpace(got)); err != nil {
		return fmt.Errorf("handler result %q is not JSON: %w", got, err)
	}
	if buf.String() != want {
		return fmt.Errorf("handler result %s, want %s", buf.String(), want)
	}
	return nil
}

// invokeOnce dials an instance's socket (host path) and invokes it with {}.
func invokeOnce(ctx context.Context, sock string, want string) (*zygote.Client, error) {
	cl, err := zygote.Dial(ctx, sock)
	if err != nil {
		return nil, err
	}
	res, err := cl.Invoke(ctx, zygote.InvokeRequest{Payload: []byte("{}")})
	if err == nil && (res.Status != 200 || res.FunctionError) {
		err = fmt.Errorf("invoke: status %d, function error %v: %s", res.Status, res.FunctionError, res.Payload)
	}
	if err == nil {
		err = checkResult(res.Payload, want)
	}
	if err != nil {
		_ = cl.Close()
		return nil, err
	}
	return cl, nil
}

// stopwatch splits one cold start into phases.
type stopwatch struct {
	last  time.Time
	order []string
	lat   map[string]*latencies
}

func newStopwatch() *stopwatch { return &stopwatch{lat: map[string]*latencies{}} }

func (s *stopwatch) start() { s.last = time.Now() }

// lap ends phase now.
func (s *stopwatch) lap(phase string) {
	now := time.Now()
	l := s.lat[phase]
	if l == nil {
		l = &latencies{}
		s.lat[phase] = l
		s.order = append(s.order, phase)
	}
	l.add(now.Sub(s.last))
	s.last = now
}

// coldLoop runs op b.N times, one at a time. Each op is one cold start,
// timed from request to handler result; the teardown it returns (closing
// the instance, destroying its sandbox) runs outside the timer and is
// reported separately as teardown-p50-us. The phases op marks on the
// stopwatch are reported as <phase>-p50-us.
func coldLoop(b *testing.B, op func(ctx context.Context, sw *stopwatch) (teardown func() error, err error)) {
	var total, teardown latencies
	sw := newStopwatch()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), coldTimeout)
		t0 := time.Now()
		sw.start()
		down, err := op(ctx, sw)
		d := time.Since(t0)
		b.StopTimer()
		if err == nil {
			total.add(d)
		}
		if down != nil {
			t1 := time.Now()
			if derr := down(); err == nil {
				err = derr
			}
			teardown.add(time.Since(t1))
		}
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	total.report(b)
	for _, phase := range sw.order {
		b.ReportMetric(sw.lat[phase].p50(), phase+"-p50-us")
	}
	if teardown.count() > 0 {
		b.ReportMetric(teardown.p50(), "teardown-p50-us")
	}
}

// BenchmarkColdStart times a cold start, from the request to the handler's
// result, for the handlers in testdata/functions (hello: a small dict;
// numpy: imports numpy and sums an arange; pandas: imports numpy and pandas
// and sums a small DataFrame), each in four ways, in one run:
//
//   - zygote: a new lean sandbox (code bound read-only at /code, 256 MiB
//     limit), then a KindServe instance forked into it from the deepest
//     zygote of a tree built beforehand (root: bare interpreter; static
//     children: numpy, numpy+pandas), then dial and invoke. Phases: create,
//     fork (until the instance listens), invoke (dial + first request).
//   - fresh: the same sandbox with the runtime bound too, and a new
//     interpreter started in it by lean (its default namespaces, PID
//     namespace included) running runtime/instance.py, which reports on
//     its ready fd once it listens; then dial and invoke. Phases: create,
//     start, invoke.
//   - crun, runc: `<runtime> run` of python3 in the harness's bundle
//     (new pid, mount, ipc, uts and network namespaces), with the handler's
//     source and a call of it in the -c string; timed from process start to
//     exit with the result read from its stdout. Skipped with a message when
//     the runtime is not installed.
//
// Teardown (closing the instance, destroying the sandbox) is not in p50-us;
// it is reported as teardown-p50-us. Every instance gets the single-thread
// BLAS environment the zygotes use. Suggested:
//
//	go test ./benchmarks -run '^$' -bench ColdStart -benchtime=20x
//
// which takes about 20 s here (crun/runc of pandas are ~0.3 s each).
func BenchmarkColdStart(b *testing.B) {
	requireRoot(b)
	ctx := context.Background()
	be := newLeanBackend(b)
	rt := runtimeDir(b)

	// The zygotes are built once, before anything is timed.
	startCtx, cancel := context.WithTimeout(ctx, 2*zygote.DefaultReadyTimeout)
	tree, err := zygote.NewTree(startCtx, be, zygote.TreeConfig{
		Root:   zygote.Config{ID: "zyg", RuntimeDir: rt, Limits: sandbox.Limits{MemoryBytes: zygoteMemory}},
		Static: [][]string{{"numpy"}, {"numpy", "pandas"}},
	})
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := tree.Close(context.Background()); err != nil {
			b.Error(err)
		}
	})
	uids := zygote.NewUIDPool(zygote.DefaultUIDBase, zygote.DefaultUIDs)

	type peer struct {
		rt     *peers.Runtime
		bundle *peers.Bundle
		skip   error
	}
	peerOf := map[string]*peer{}
	for _, name := range peerRuntimes {
		p := &peer{}
		p.rt, p.bundle, p.skip = newPythonPeer(b, name)
		peerOf[name] = p
	}

	for _, h := range coldHandlers {
		code := functionDir(b, h.name)
		b.Run(h.name, func(b *testing.B) {
			b.Run("zygote", func(b *testing.B) {
				coldLoop(b, func(ctx context.Context, sw *stopwatch) (func() error, error) {
					return coldZygote(ctx, sw, be, tree, uids, h, code)
				})
			})
			b.Run("fresh", func(b *testing.B) {
				coldLoop(b, func(ctx context.Context, sw *stopwatch) (func() error, error) {
					return coldFresh(ctx, sw, be, rt, h, code)
				})
			})
			src, err := os.ReadFile(filepath.Join(code, "lambda_function.py"))
			if err != nil {
				b.Fatal(err)
			}
			// The handler's own source, then a call of it: what the
			// instance server does, minus the server.
			script := string(src) + "\nimport json as _json\nprint(_json.dumps(lambda_handler({}, None)))\n"
			for _, name := range peerRuntimes {
				p := peerOf[name]
				b.Run(name, func(b *testing.B) {
					if p.skip != nil {
						b.Skipf("skipping %s: %v", name, p.skip)
					}
					coldLoop(b, func(ctx context.Context, _ *stopwatch) (func() error, error) {
						var out, stderr bytes.Buffer
						args := []string{zygote.Python, "-I", "-c", script}
						if err := p.rt.Run(ctx, p.bundle, sandboxID(h.name+"-"), args, &out, &stderr); err != nil {
							return nil, err
						}
						if err := checkResult(out.Bytes(), h.want); err != nil {
							return nil, fmt.Errorf("%s: %w (stderr: %s)", name, err, stderr.String())
						}
						return nil, nil
					})
				})
			}
		})
	}
}

// coldZygote is one zygote cold start: sandbox, fork, dial, invoke.
func coldZygote(ctx context.Context, sw *stopwatch, be *lean.Backend, tree *zygote.Tree, uids *zygote.UIDPool, h coldHandler, code string) (func() error, error) {
	id := sandboxID("z")
	sb, err := createFunctionSandbox(ctx, be, id, code)
	if err != nil {
		return nil, err
	}
	uid, err := uids.Get()
	if err != nil {
		return func() error { return sb.Destroy(context.Background()) }, err
	}
	var inst *zygote.Instance
	var cl *zygote.Client
	down := func() error {
		dctx := context.Background()
		if cl != nil {
			_ = cl.Close()
		}
		if inst != nil {
			_ = inst.Close()
			_, _ = inst.Wait(dctx)
		}
		err := sb.Destroy(dctx)
		uids.Put(uid)
		return err
	}
	// The instance's uid must be able to create its socket.
	if err := os.Chown(sb.Scratch(), int(uid), int(uid)); err != nil {
		return down, err
	}
	sw.lap("create")
	inst, err = tree.Fork(ctx, sb, h.packages, zygote.ForkRequest{
		Kind: zygote.KindServe, UID: uid, GID: uid, Hostname: id, Env: instanceEnv,
		Function: &zygote.Function{Socket: instanceSocket, Dir: "/code", Name: h.name, MemoryMB: instanceMemory >> 20},
	})
	if err != nil {
		return down, fmt.Errorf("fork %s: %w", h.name, err)
	}
	sw.lap("fork")
	cl, err = invokeOnce(ctx, filepath.Join(sb.Scratch(), filepath.Base(instanceSocket)), h.want)
	if err != nil {
		return down, fmt.Errorf("%s from a zygote: %w", h.name, err)
	}
	sw.lap("invoke")
	return down, nil
}

// freshInstance starts runtime/instance.py in sb as the sandbox's default
// user and waits for its ready line. The ready fd is the process's stdin
// (the write end of a pipe): lean passes no other descriptors, and the
// instance closes the fd once it has reported.
func freshInstance(ctx context.Context, sb *lean.Sandbox, h coldHandler) (sandbox.Process, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	p, err := sb.Start(ctx, sandbox.ProcessSpec{
		Args: []string{zygote.Python, "-I", zygote.RuntimeDir + "/instance.py",
			"--socket", instanceSocket, "--dir", "/code", "--name", h.name,
			"--memory-mb", fmt.Sprint(instanceMemory >> 20), "--ready-fd", "0"},
		Env:   instanceEnv,
		Stdin: w,
	})
	w.Close()
	if err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(coldTimeout)
	}
	_ = r.SetReadDeadline(deadline)
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		return p, fmt.Errorf("fresh %s: no ready line: %w", h.name, err)
	}
	if line = strings.TrimSpace(line); line != "ready" {
		return p, fmt.Errorf("fresh %s: %s", h.name, line)
	}
	return p, nil
}

// coldFresh is one fresh cold start: sandbox, new interpreter, dial, invoke.
func coldFresh(ctx context.Context, sw *stopwatch, be *lean.Backend, rt string, h coldHandler, code string) (func() error, error) {
	sb, err := createFunctionSandbox(ctx, be, sandboxID("f"), code, fsbind.Bind{Source: rt, Dest: zygote.RuntimeDir})
	if err != nil {
		return nil, err
	}
	var cl *zygote.Client
	var p sandbox.Process
	down := func() error {
		if cl != nil {
			_ = cl.Close()
		}
		err := sb.Destroy(context.Background())
		if p != nil {
			_, _ = p.Wait(context.Background())
		}
		return err
	}
	sw.lap("create")
	if p, err = freshInstance(ctx, sb, h); err != nil {
		return down, err
	}
	sw.lap("start")
	cl, err = invokeOnce(ctx, filepath.Join(sb.Scratch(), filepath.Base(instanceSocket)), h.want)
	if err != nil {
		return down, fmt.Errorf("fresh %s: %w", h.name, err)
	}
	sw.lap("invoke")
	return down, nil
}

// newPythonPeer is newPeer with the instances' environment in the bundle;
// a missing runtime is returned as the reason to skip rather than skipping
// the caller.
func newPythonPeer(b *testing.B, name string) (*peers.Runtime, *peers.Bundle, error) {
	rt, err := peers.Find(name)
	if errors.Is(err, peers.ErrNotInstalled) {
		return nil, nil, err
	}
	if err != nil {
		b.Fatal(err)
	}
	bundle, err := peers.NewBundle(filepath.Join(stateDir(b), "bundle"), peers.BundleOptions{
		CgroupParent: "/" + benchName(b),
		Env:          threadEnv,
	})
	if err != nil {
		_ = rt.Close()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := peers.Cleanup(context.Background(), bundle, rt); err != nil {
			b.Error(err)
		}
		_ = rt.Close()
	})
	return rt, bundle, nil
}
