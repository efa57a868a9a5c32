package zygote_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/zygote"
)

// measure runs op b.N times with setup (untimed) before each, and reports
// the median as p50-us.
func measure(b *testing.B, setup func() *lean.Sandbox, op func(sb *lean.Sandbox)) {
	durs := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		sb := setup()
		b.StartTimer()
		start := time.Now()
		op(sb)
		durs = append(durs, time.Since(start))
		b.StopTimer()
		_ = sb.Destroy(context.Background())
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Microseconds()), "p50-us")
	b.ReportMetric(float64(durs[len(durs)*99/100].Microseconds()), "p99-us")
}

// BenchmarkFork: /bin/true forked from a zygote (with and without a PID
// namespace) against lean's own Start, from request to exit; and a
// Lambda-style hello handler forked from a numpy zygote, from request to
// listening.
func BenchmarkFork(b *testing.B) {
	testutil.RequiresRoot(b)
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
	execTrue := func(pidns bool) func(sb *lean.Sandbox) {
		return func(sb *lean.Sandbox) {
			inst, err := z.Fork(ctx, sb, zygote.ForkRequest{Kind: zygote.KindExec, Argv: []string{"/bin/true"},
				UID: 200501, GID: 200501, PIDNamespace: pidns})
			if err != nil {
				b.Fatal(err)
			}
			if st, err := inst.Wait(ctx); err != nil || !st.Success() {
				b.Fatalf("%+v %v", st, err)
			}
		}
	}
	b.Run("exec-true/zygote", func(b *testing.B) { measure(b, plain, execTrue(false)) })
	b.Run("exec-true/zygote-pidns", func(b *testing.B) { measure(b, plain, execTrue(true)) })
	b.Run("exec-true/lean", func(b *testing.B) {
		measure(b, plain, func(sb *lean.Sandbox) {
			p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/true"}})
			if err != nil {
				b.Fatal(err)
			}
			if st, err := p.Wait(ctx); err != nil || !st.Success() {
				b.Fatalf("%+v %v", st, err)
			}
		})
	})
	b.Run("serve-hello/numpy-zygote", func(b *testing.B) {
		nz := startZygote(b, be, "numpy")
		const uid = 200502
		setup := func() *lean.Sandbox {
			sb := functionSandbox(b, be, "hello", uid)
			return sb
		}
		measure(b, setup, func(sb *lean.Sandbox) {
			inst, err := nz.Fork(ctx, sb, zygote.ForkRequest{Kind: zygote.KindServe, UID: uid, GID: uid,
				Function: &zygote.Function{Socket: "/scratch/fn.sock", Dir: "/code", Name: "hello"}})
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if _, err := os.Stat(filepath.Join(sb.Scratch(), "fn.sock")); err != nil {
				b.Fatal(err)
			}
			_ = inst.Close()
			_, _ = inst.Wait(ctx)
			b.StartTimer()
		})
	})
}
