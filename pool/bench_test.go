package pool

import (
	"context"
	"fmt"
	"testing"
)

type nopInstance struct{}

func (nopInstance) Pause(context.Context) error                 { return nil }
func (nopInstance) Unpause(context.Context) error               { return nil }
func (nopInstance) MemoryBytes(context.Context) (uint64, error) { return 0, nil }
func (nopInstance) Close(context.Context) error                 { return nil }

// BenchmarkAcquireRelease is the warm path: one idle instance, leased and
// given back, with the janitor running.
func BenchmarkAcquireRelease(b *testing.B) {
	h, err := NewHandlers(HandlersConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close(context.Background())
	h.Add("f", nopInstance{}).Release(true)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := h.Acquire(ctx, "f")
		if err != nil {
			b.Fatal(err)
		}
		l.Release(true)
	}
}

// BenchmarkAcquireReleaseParallel: every goroutine has a key of its own,
// so the contention measured is the cache's single lock.
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	h, err := NewHandlers(HandlersConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close(context.Background())
	ctx := context.Background()
	var next int
	var keys = make(chan string, 1024)
	for range cap(keys) {
		next++
		k := fmt.Sprint("f", next)
		h.Add(k, nopInstance{}).Release(true)
		keys <- k
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := <-keys
		for pb.Next() {
			l, err := h.Acquire(ctx, key)
			if err != nil {
				b.Error(err)
				return
			}
			l.Release(true)
		}
	})
}

// BenchmarkGenericGet takes ready items from a cache kept full.
func BenchmarkGenericGet(b *testing.B) {
	g, err := NewGeneric(GenericConfig[int]{
		Make:    func(context.Context) (int, error) { return 1, nil },
		Destroy: func(context.Context, int) error { return nil },
		Target:  64,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close(context.Background())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := g.Get(ctx); err != nil {
			b.Fatal(err)
		}
	}
	// One refill worker cannot keep up with this loop: most Gets are misses
	// that call the (free) Make themselves. The figure is Get's overhead.
	s := g.Stats()
	b.ReportMetric(float64(s.Hits)/float64(s.Hits+s.Misses), "hit-ratio")
}
