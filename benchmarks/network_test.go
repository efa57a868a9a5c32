//go:build linux

package benchmarks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/netns"
	"github.com/sockfaas/sockfaas/sandbox"
)

// newNetManager builds a netns.Manager with its own bridge, chains, state
// dir and a /24 that is unlikely to be in use; New refuses an overlap.
func newNetManager(b *testing.B) *netns.Manager {
	var r [2]byte
	_, _ = rand.Read(r[:])
	suffix := hex.EncodeToString(r[:])
	m, err := netns.New(context.Background(), netns.Config{
		Bridge:      "sfb" + suffix,
		Subnet:      netip.MustParsePrefix(fmt.Sprintf("10.219.%d.0/24", r[0])),
		Slots:       4,
		NonePool:    8,
		ChainPrefix: "SFB" + suffix + "-",
		StateDir:    stateDir(b),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return m
}

// BenchmarkNetwork measures what giving a new sandbox its network costs.
// Each variant alternates, iteration by iteration, a whole lean lifecycle
// (create -> /bin/true -> destroy) with no network of its own (the host's)
// and the same lifecycle with the variant's network, so that both see the
// same machine noise; added-p50-us is the difference of their medians.
// Variants: joining a pre-built shared slot ("shared"), a pooled
// loopback-only namespace ("none"), a namespace + veth + address made for
// the sandbox ("isolated"), and a fresh namespace from clone(CLONE_NEWNET)
// ("clone-newnet"). attach-p50-us is the netns.Manager's Attach alone.
// With 1 and 2 workers.
func BenchmarkNetwork(b *testing.B) {
	requireRoot(b)
	ctx := context.Background()
	mgr := newNetManager(b)
	type variant struct {
		name string
		mode netns.Mode // "" = no Attach
		ns   sandbox.Namespaces
	}
	variants := []variant{
		{"shared", netns.ModeShared, 0},
		{"none", netns.ModeNone, 0},
		{"isolated", netns.ModeIsolated, 0},
		{"clone-newnet", "", sandbox.DefaultNamespaces | sandbox.NSNet},
	}
	for _, workers := range []int{1, 2} {
		for _, v := range variants {
			name := v.name
			if workers > 1 {
				name = fmt.Sprintf("%s-parallel-%d", v.name, workers)
			}
			b.Run(name, func(b *testing.B) {
				// Background work of the previous variant (teardowns, pool
				// refills) must not land on this one.
				if err := mgr.Settle(ctx); err != nil {
					b.Fatal(err)
				}
				be := newLean(b)
				var host, withNet, attach latencies
				_ = timed(b, workers, func(i int) error { // reported below, per half
					t0 := time.Now()
					if err := lifecycle(ctx, be, fmt.Sprintf("h%d", i), sandbox.Spec{}); err != nil {
						return err
					}
					host.add(time.Since(t0))

					t0 = time.Now()
					spec := sandbox.Spec{Namespaces: v.ns}
					var a *netns.Attachment
					if v.mode != "" {
						var err error
						if a, err = mgr.Attach(ctx, v.mode, nil); err != nil {
							return err
						}
						attach.add(time.Since(t0))
						spec.NetNS = a.NSPath()
					}
					err := lifecycle(ctx, be, fmt.Sprintf("n%d", i), spec)
					if a != nil {
						if rerr := a.Release(ctx); err == nil {
							err = rerr
						}
					}
					withNet.add(time.Since(t0))
					return err
				})
				hp, np := host.p50(), withNet.p50()
				b.ReportMetric(hp, "host-p50-us")
				b.ReportMetric(np, "net-p50-us")
				b.ReportMetric(withNet.pct(0.99), "net-p99-us")
				b.ReportMetric(np-hp, "added-p50-us")
				if v.mode != "" {
					attach.reportAs(b, "attach-")
				}
			})
		}
	}
}
