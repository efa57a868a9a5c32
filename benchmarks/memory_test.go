//go:build linux

package benchmarks

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/zygote"
)

// memInstances is how many numpy instances BenchmarkMemory keeps alive at
// once.
const memInstances = 50

// memStartWorkers start instances concurrently: fifty fresh interpreters one
// after the other would take seconds for no benefit to the measurement.
const memStartWorkers = 4

// BenchmarkMemory keeps memInstances instances of the numpy handler alive at
// once, each warmed with one invocation, and measures what each costs from
// /proc/<pid>/smaps_rollup, summed over the processes in the instance's
// sandbox cgroup:
//
//   - pss-kib-per-instance: proportional set size, shared pages divided
//     among the processes sharing them (the zygote included);
//   - uss-kib-per-instance: private pages only (Private_Clean +
//     Private_Dirty), what killing the instance gives back.
//
// Variants: zygote (forked from a numpy zygote, which is not counted per
// instance: zygote-pss-kib is the zygote's own PSS, measured while its
// instances are alive) and fresh (a new interpreter per sandbox, started by
// lean: its sandbox init process is counted with it). Every sandbox has a
// 256 MiB memory limit. Each b.N iteration takes one sample of every
// instance; the metrics are the median sample. Instances are built once per
// run of the sub-benchmark and are not timed.
//
//	go test ./benchmarks -run '^$' -bench Memory -benchtime=20x
func BenchmarkMemory(b *testing.B) {
	requireRoot(b)
	b.Run("zygote", func(b *testing.B) { benchMemory(b, true) })
	b.Run("fresh", func(b *testing.B) { benchMemory(b, false) })
}

// memInstance is one live instance of the numpy handler.
type memInstance struct {
	sb   *lean.Sandbox
	stop func() error // closes the instance and destroys its sandbox
}

func benchMemory(b *testing.B, fromZygote bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	be := newLeanBackend(b, lean.WithPoolSize(memInstances+1))
	rt := runtimeDir(b)
	h := coldHandlers[1]
	if h.name != "numpy" {
		b.Fatalf("coldHandlers[1] is %s, want numpy", h.name)
	}
	code := functionDir(b, h.name)

	var z *zygote.Zygote
	if fromZygote {
		var err error
		z, err = zygote.Start(ctx, be, zygote.Config{ID: "zyg-numpy", Packages: h.packages, RuntimeDir: rt,
			Limits: sandbox.Limits{MemoryBytes: zygoteMemory}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			if err := z.Close(context.Background()); err != nil {
				b.Error(err)
			}
		})
	}
	uids := zygote.NewUIDPool(zygote.DefaultUIDBase, zygote.DefaultUIDs)

	insts := make([]*memInstance, memInstances)
	// Registered after the backend's and the zygote's cleanups, so it runs
	// before them: instances go first.
	b.Cleanup(func() {
		for _, in := range insts {
			if in == nil {
				continue
			}
			if err := in.stop(); err != nil {
				b.Error(err)
			}
		}
	})
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < memStartWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var in *memInstance
				var err error
				if fromZygote {
					in, err = memZygoteInstance(ctx, be, z, uids, h, code)
				} else {
					in, err = memFreshInstance(ctx, be, rt, h, code)
				}
				mu.Lock()
				insts[i] = in
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range insts {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}

	var pss, uss, zpss []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var sumP, sumU uint64
		for _, in := range insts {
			u, err := cgroupUsage(in.sb)
			if err != nil {
				b.Fatal(err)
			}
			sumP += u.pss
			sumU += u.uss
		}
		pss = append(pss, float64(sumP)/memInstances)
		uss = append(uss, float64(sumU)/memInstances)
		if z != nil {
			u, err := cgroupUsage(z.Sandbox())
			if err != nil {
				b.Fatal(err)
			}
			zpss = append(zpss, float64(u.pss))
		}
	}
	b.StopTimer()
	b.ReportMetric(median(pss), "pss-kib-per-instance")
	b.ReportMetric(median(uss), "uss-kib-per-instance")
	if z != nil {
		b.ReportMetric(median(zpss), "zygote-pss-kib")
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func memZygoteInstance(ctx context.Context, be *lean.Backend, z *zygote.Zygote, uids *zygote.UIDPool, h coldHandler, code string) (*memInstance, error) {
	id := sandboxID("mz")
	sb, err := createFunctionSandbox(ctx, be, id, code)
	if err != nil {
		return nil, err
	}
	uid, err := uids.Get()
	if err != nil {
		return nil, errors.Join(err, sb.Destroy(context.Background()))
	}
	var inst *zygote.Instance
	in := &memInstance{sb: sb, stop: func() error {
		if inst != nil {
			_ = inst.Close()
			_, _ = inst.Wait(context.Background())
		}
		err := sb.Destroy(context.Background())
		uids.Put(uid)
		return err
	}}
	if err := os.Chown(sb.Scratch(), int(uid), int(uid)); err != nil {
		return in, err
	}
	inst, err = z.Fork(ctx, sb, zygote.ForkRequest{
		Kind: zygote.KindServe, UID: uid, GID: uid, Hostname: id, Env: instanceEnv,
		Function: &zygote.Function{Socket: instanceSocket, Dir: "/code", Name: h.name, MemoryMB: instanceMemory >> 20},
	})
	if err != nil {
		return in, fmt.Errorf("fork %s: %w", h.name, err)
	}
	cl, err := invokeOnce(ctx, filepath.Join(sb.Scratch(), filepath.Base(instanceSocket)), h.want)
	if err != nil {
		return in, fmt.Errorf("warm %s from a zygote: %w", h.name, err)
	}
	return in, cl.Close()
}

func memFreshInstance(ctx context.Context, be *lean.Backend, rt string, h coldHandler, code string) (*memInstance, error) {
	sb, err := createFunctionSandbox(ctx, be, sandboxID("mf"), code, fsbind.Bind{Source: rt, Dest: zygote.RuntimeDir})
	if err != nil {
		return nil, err
	}
	var p sandbox.Process
	in := &memInstance{sb: sb, stop: func() error {
		err := sb.Destroy(context.Background())
		if p != nil {
			_, _ = p.Wait(context.Background())
		}
		return err
	}}
	if p, err = freshInstance(ctx, sb, h); err != nil {
		return in, err
	}
	cl, err := invokeOnce(ctx, filepath.Join(sb.Scratch(), filepath.Base(instanceSocket)), h.want)
	if err != nil {
		return in, fmt.Errorf("warm fresh %s: %w", h.name, err)
	}
	return in, cl.Close()
}

// memUsage is smaps_rollup figures in KiB, summed over processes.
type memUsage struct {
	pss, uss uint64
	procs    int
}

// cgroupUsage sums smaps_rollup over the processes in sb's cgroup (the
// memory hierarchy's on cgroup v1, where every hierarchy holds the same
// processes).
func cgroupUsage(sb *lean.Sandbox) (memUsage, error) {
	cgs := sb.Info().Cgroups
	if len(cgs) == 0 {
		return memUsage{}, fmt.Errorf("sandbox %s has no cgroup", sb.ID())
	}
	dir := cgs[0]
	for _, c := range cgs {
		if strings.Contains(c, "/memory/") {
			dir = c
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return memUsage{}, err
	}
	var u memUsage
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return memUsage{}, fmt.Errorf("%s/cgroup.procs: %q", dir, f)
		}
		p, err := smapsRollup(pid)
		if errors.Is(err, fs.ErrNotExist) {
			continue // exited since cgroup.procs was read
		}
		if err != nil {
			return memUsage{}, err
		}
		u.pss += p.pss
		u.uss += p.uss
		u.procs++
	}
	if u.procs == 0 {
		return memUsage{}, fmt.Errorf("sandbox %s: no live process in %s", sb.ID(), dir)
	}
	return u, nil
}

// smapsRollup reads Pss and Private_{Clean,Dirty} (kB) of one process.
func smapsRollup(pid int) (memUsage, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memUsage{}, err
	}
	var u memUsage
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch key {
		case "Pss":
			dst = &u.pss
		case "Private_Clean", "Private_Dirty":
			dst = &u.uss
		default:
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return memUsage{}, fmt.Errorf("pid %d smaps_rollup: bad line %q", pid, sc.Text())
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return memUsage{}, fmt.Errorf("pid %d smaps_rollup: %w", pid, err)
		}
		*dst += n
	}
	u.procs = 1
	return u, nil
}
