package pool_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sockfaas/sockfaas/pool"
)

// process stands in for a zygote-forked instance in its sandbox; the
// invoker's real adapter freezes a cgroup and reads its memory charge.
type process struct {
	name   string
	frozen bool
}

func (p *process) Pause(context.Context) error                 { p.frozen = true; return nil }
func (p *process) Unpause(context.Context) error               { p.frozen = false; return nil }
func (p *process) MemoryBytes(context.Context) (uint64, error) { return 3 << 20, nil }
func (p *process) Close(context.Context) error                 { fmt.Println("closed", p.name); return nil }

// serve routes one request the way the invoker does: a cached instance if
// there is one, else a cold start registered with Add.
func serve(ctx context.Context, h *pool.Handlers, fn string, n *int) error {
	lease, err := h.Acquire(ctx, fn)
	if errors.Is(err, pool.ErrMiss) {
		*n++
		lease = h.Add(fn, &process{name: fmt.Sprintf("%s#%d", fn, *n)})
	} else if err != nil {
		return err
	}
	p := lease.Instance().(*process)
	fmt.Printf("%s served by %s (%s start)\n", fn, p.name, lease.Start())
	lease.Release(true) // healthy: keep it warm
	return nil
}

func Example() {
	ctx := context.Background()
	h, err := pool.NewHandlers(pool.HandlersConfig{
		PauseAfter:   20 * time.Millisecond,
		IdleTimeout:  time.Minute,
		MemoryBudget: 512 << 20,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	n := 0
	_ = serve(ctx, h, "hello", &n) // cold
	_ = serve(ctx, h, "hello", &n) // warm

	// Idle for a while: the janitor pauses the instance in the background.
	for h.Counts("hello").Paused == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	_ = serve(ctx, h, "hello", &n) // resumed
	fmt.Printf("%+v\n", h.Counts("hello"))

	if err := h.Close(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// hello served by hello#1 (cold start)
	// hello served by hello#1 (warm start)
	// hello served by hello#1 (paused start)
	// {Busy:0 Idle:1 Paused:0}
	// closed hello#1
}

func ExampleGeneric() {
	ctx := context.Background()
	made := 0
	g, err := pool.NewGeneric(pool.GenericConfig[string]{
		// The invoker's Make creates a lean sandbox with its root stitched,
		// its cgroup taken and its network attached.
		Make: func(context.Context) (string, error) {
			made++ // one background worker: no race
			return fmt.Sprintf("sandbox-%d", made), nil
		},
		Destroy: func(_ context.Context, sb string) error {
			fmt.Println("destroyed", sb)
			return nil
		},
		Target: 2,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for g.Stats().Ready < 2 {
		time.Sleep(time.Millisecond)
	}
	sb, fromCache, err := g.Get(ctx)
	fmt.Println(sb, fromCache, err)
	for g.Stats().Ready < 2 {
		time.Sleep(time.Millisecond)
	}
	if err := g.Close(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// sandbox-1 true <nil>
	// destroyed sandbox-2
	// destroyed sandbox-3
}
