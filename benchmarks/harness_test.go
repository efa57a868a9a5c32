//go:build linux

package benchmarks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/sandbox/libct"
	"github.com/sockfaas/sockfaas/zygote"
)

func TestMain(m *testing.M) {
	libct.Init() // the libcontainer backend re-execs this binary as "init"
	os.Exit(m.Run())
}

func requireRoot(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("skipping: benchmarks create namespaces, mounts and cgroups and need root")
	}
}

// benchName is a unique name for state dirs and cgroups; scripts/debris.sh
// recognises the prefix.
func benchName(b *testing.B) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return "sockfaas-bench-" + hex.EncodeToString(r[:])
}

// stateDir is a short state directory under /run, removed at the end.
func stateDir(b *testing.B) string {
	dir := "/run/" + benchName(b)
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func newLean(b *testing.B) sandbox.Backend { return newLeanBackend(b) }

// newLeanBackend is newLean with the concrete type, which the zygote
// package needs, and extra options.
func newLeanBackend(b *testing.B, opts ...lean.Option) *lean.Backend {
	opts = append([]lean.Option{lean.WithStateDir(stateDir(b)), lean.WithCgroupName("/" + benchName(b))}, opts...)
	be, err := lean.New(context.Background(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := be.Close(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return be
}

// runtimeDir writes the zygote package's Python runtime into a new
// directory that sandboxes can bind at zygote.RuntimeDir.
func runtimeDir(b *testing.B) string {
	dir := stateDir(b)
	if err := zygote.WriteRuntime(dir); err != nil {
		b.Fatal(err)
	}
	// Instances run as unprivileged uids and must be able to read it.
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
}

// functionDir is the absolute path of a handler under testdata/functions.
func functionDir(b *testing.B, name string) string {
	dir, err := filepath.Abs(filepath.Join("testdata", "functions", name))
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

func newLibct(b *testing.B) sandbox.Backend {
	be, err := libct.New(context.Background(), libct.WithStateDir(stateDir(b)), libct.WithCgroupParent("/"+benchName(b)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := be.Close(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return be
}

// latencies collects per-operation durations from any number of goroutines
// and reports their percentiles as benchmark metrics.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B) { l.reportAs(b, "") }

// reportAs reports p50 and p99 with units prefixed by prefix ("attach-").
func (l *latencies) reportAs(b *testing.B, prefix string) {
	if l.count() == 0 {
		return
	}
	b.ReportMetric(l.pct(0.50), prefix+"p50-us")
	b.ReportMetric(l.pct(0.99), prefix+"p99-us")
}

func (l *latencies) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// pct is the p-th quantile in microseconds (0 when empty).
func (l *latencies) pct(p float64) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	return float64(l.d[min(len(l.d)-1, int(float64(len(l.d))*p))].Nanoseconds()) / 1e3
}

func (l *latencies) p50() float64 { return l.pct(0.5) }

// timed runs op b.N times, serially or with `workers` goroutines, and
// returns the latency of each op; when parallel it also reports operations
// per second as sandboxes/s.
func timed(b *testing.B, workers int, op func(i int) error) *latencies {
	var lat latencies
	b.ResetTimer()
	start := time.Now()
	if workers <= 1 {
		for i := 0; i < b.N; i++ {
			t := time.Now()
			if err := op(i); err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(t))
		}
	} else {
		var wg sync.WaitGroup
		var next int64
		var mu sync.Mutex
		errc := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= int64(b.N) {
						return
					}
					t := time.Now()
					if err := op(int(i)); err != nil {
						errc <- err
						return
					}
					lat.add(time.Since(t))
				}
			}()
		}
		wg.Wait()
		close(errc)
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if workers > 1 {
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sandboxes/s")
	}
	return &lat
}
