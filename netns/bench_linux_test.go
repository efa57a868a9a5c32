package netns

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/sockfaas/sockfaas/internal/testutil"
)

// BenchmarkAttach measures what giving a new sandbox its network costs, per
// mode, with 1 and 2 workers attaching at once: the latency of Attach, as
// p50-us and p99-us. Release runs after each Attach, as a sandbox's
// destroy would; its background teardown (for isolated: namespace and veth)
// competes with the next Attach, as it would in a server.
func BenchmarkAttach(b *testing.B) {
	testutil.RequiresRoot(b)
	m := newTestManager(b, func(c *Config) {
		c.Subnet = freeSubnet(b, 20) // room for isolated sandboxes awaiting teardown
		c.Slots = 4
		c.Logger = zerolog.Nop()
	})
	ctx := context.Background()

	type variant struct {
		name    string
		mode    Mode
		ports   bool // publish one port (a new container port each time)
		workers int
	}
	var variants []variant
	for _, mode := range []Mode{ModeShared, ModeIsolated} {
		for _, workers := range []int{1, 2} {
			variants = append(variants, variant{string(mode), mode, false, workers})
		}
	}
	// What one published port adds: an iptables rule on Attach. Each
	// iteration publishes another container port, since a released one is
	// only free again once its rule is gone.
	variants = append(variants, variant{"shared-1port", ModeShared, true, 1})
	for _, v := range variants {
		b.Run(fmt.Sprintf("%s/workers=%d", v.name, v.workers), func(b *testing.B) {
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, v.workers)
			b.ResetTimer()
			for range v.workers {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						var ports []PortSpec
						if v.ports {
							ports = []PortSpec{{ContainerPort: 10000 + int(i)}}
						}
						start := time.Now()
						a, err := m.Attach(ctx, v.mode, ports)
						lat[i] = time.Since(start)
						if err != nil {
							errs <- err
							return
						}
						if err := a.Release(ctx); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			if err := m.Settle(ctx); err != nil {
				b.Fatal(err)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-us")
			b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Nanoseconds())/1e3, "p99-us")
		})
	}
}
