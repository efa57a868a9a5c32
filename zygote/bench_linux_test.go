package zygote_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/zygote"
)

// measure runs op b.N times with setup before and teardown after each (both
// untimed), and reports the median and 99th percentile of op as p50-us and
// p99-us. With SOCKFAAS_ZYGOTE_TRACE set, it also logs the median of every
// fork step (see zygote's fork tracing).
func measure(b *testing.B, setup func() *lean.Sandbox, op func(sb *lean.Sandbox) any, teardown func(any)) {
	steps := traceSteps(b)
	durs := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		sb := setup()
		b.StartTimer()
		start := time.Now()
		v := op(sb)
		durs = append(durs, time.Since(start))
		b.StopTimer()
		if teardown != nil {
			teardown(v)
		}
		_ = sb.Destroy(context.Background())
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Microseconds()), "p50-us")
	b.ReportMetric(float64(durs[len(durs)*99/100].Microseconds()), "p99-us")
	steps.report(b)
}

// stepTimes collects fork traces: per step, the time since the previous
// checkpoint.
type stepTimes struct {
	order []string
	us    map[string][]float64
}

func traceSteps(b *testing.B) *stepTimes {
	if os.Getenv("SOCKFAAS_ZYGOTE_TRACE") == "" {
		return nil
	}
	st := &stepTimes{us: map[string][]float64{}}
	zygote.SetForkTrace(func(names []string, ns []int64) {
		last := 0
		for i := 1; i < len(names); i++ {
			if _, ok := st.us[names[i]]; !ok {
				st.order = append(st.order, names[i])
			}
			if strings.HasPrefix(names[i], "#") {
				st.us[names[i]] = append(st.us[names[i]], float64(ns[i]))
				continue
			}
			st.us[names[i]] = append(st.us[names[i]], float64(ns[i]-ns[i-1])/1e3)
			last = i
		}
		st.us["TOTAL"] = append(st.us["TOTAL"], float64(ns[last]-ns[0])/1e3)
	})
	b.Cleanup(func() { zygote.SetForkTrace(nil) })
	return st
}

func (st *stepTimes) report(b *testing.B) {
	if st == nil || len(st.us["TOTAL"]) < 2 {
		return
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s: fork steps (us since the previous checkpoint), %d forks: step p50 p90 p99 max\n", b.Name(), len(st.us["TOTAL"]))
	for _, name := range append(st.order, "TOTAL") {
		v := st.us[name]
		slices.Sort(v)
		fmt.Fprintf(&sb, "  %-16s %8.1f %8.1f %8.1f %8.1f\n", name, v[len(v)/2], v[len(v)*9/10], v[len(v)*99/100], v[len(v)-1])
	}
	// On stderr: b.Log output is cut short.
	fmt.Fprint(os.Stderr, sb.String())
}

// BenchmarkFork: /bin/true forked from a zygote (with and without a PID
// namespace) against lean's own Start, from request to exit; a Lambda-style
// hello handler forked from a numpy zygote, from request to listening; and
// the numpy handler forked from a numpy zygote, from request to the result
// of its first invocation.
func BenchmarkFork(b *testing.B) {
	testutil.RequiresRoot(b)
	outer := b
	ctx := context.Background()
	be := newLean(b)
	z := startZygote(b, be)
	plain := func() *lean.Sandbox {
		sb, err := be.Create(ctx, testutil.UniqueName(b), sandbox.Spec{})
		if err != nil {
			b.Fatal(err)
		}
		return sb.(*lean.Sandbox)
	}
	execTrue := func(pidns bool) func(sb *lean.Sandbox) any {
		return func(sb *lean.Sandbox) any {
			inst, err := z.Fork(ctx, sb, zygote.ForkRequest{Kind: zygote.KindExec, Argv: []string{"/bin/true"},
				UID: 200501, GID: 200501, PIDNamespace: pidns})
			if err != nil {
				b.Fatal(err)
			}
			if st, err := inst.Wait(ctx); err != nil || !st.Success() {
				b.Fatalf("%+v %v", st, err)
			}
			return nil
		}
	}
	b.Run("exec-true/zygote", func(b *testing.B) { measure(b, plain, execTrue(false), nil) })
	b.Run("exec-true/zygote-pidns", func(b *testing.B) { measure(b, plain, execTrue(true), nil) })
	b.Run("exec-true/lean", func(b *testing.B) {
		measure(b, plain, func(sb *lean.Sandbox) any {
			p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/true"}})
			if err != nil {
				b.Fatal(err)
			}
			if st, err := p.Wait(ctx); err != nil || !st.Success() {
				b.Fatalf("%+v %v", st, err)
			}
			return nil
		}, nil)
	})
	stopInstance := func(v any) {
		inst := v.(*zygote.Instance)
		_ = inst.Close()
		_, _ = inst.Wait(ctx)
	}
	var nz *zygote.Zygote
	numpyZygote := func() *zygote.Zygote {
		if nz == nil {
			nz = startZygote(outer, be, "numpy")
		}
		return nz
	}
	b.Run("serve-hello/numpy-zygote", func(b *testing.B) {
		nz := numpyZygote()
		const uid = 200502
		setup := func() *lean.Sandbox { return functionSandbox(b, be, "hello", uid) }
		measure(b, setup, func(sb *lean.Sandbox) any {
			inst, err := nz.Fork(ctx, sb, zygote.ForkRequest{Kind: zygote.KindServe, UID: uid, GID: uid,
				Function: &zygote.Function{Socket: "/scratch/fn.sock", Dir: "/code", Name: "hello"}})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if _, err := os.Stat(filepath.Join(sb.Scratch(), "fn.sock")); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			return inst
		}, stopInstance)
	})
	b.Run("invoke-numpy/numpy-zygote", func(b *testing.B) {
		nz := numpyZygote()
		const uid = 200503
		setup := func() *lean.Sandbox { return functionSandbox(b, be, "numpy", uid) }
		measure(b, setup, func(sb *lean.Sandbox) any {
			inst, err := nz.Fork(ctx, sb, zygote.ForkRequest{Kind: zygote.KindServe, UID: uid, GID: uid,
				Function: &zygote.Function{Socket: "/scratch/fn.sock", Dir: "/code", Name: "numpy"}})
			if err != nil {
				b.Fatal(err)
			}
			c, err := zygote.Dial(ctx, filepath.Join(sb.Scratch(), "fn.sock"))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			res, err := c.Invoke(ctx, zygote.InvokeRequest{Payload: []byte(`{"values":[1,2,3]}`)})
			if err != nil || res.FunctionError || string(res.Payload) != `{"sum": 6}` {
				b.Fatalf("%+v %v", res, err)
			}
			return inst
		}, stopInstance)
	})
}
