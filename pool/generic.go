package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// The error vocabulary of package pool; callers test with errors.Is.
var (
	// ErrClosed: the cache has been closed.
	ErrClosed = errors.New("cache closed")
	// ErrMiss: the handler cache has no instance for that key; build one
	// and register it with Handlers.Add.
	ErrMiss = errors.New("no cached instance")
	// ErrInvalid: a configuration is malformed; nothing was started.
	ErrInvalid = errors.New("invalid argument")
)

// Defaults of GenericConfig.
const (
	DefaultMinBackoff = 10 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// GenericConfig configures a Generic cache. Make and Destroy are required;
// zero values elsewhere mean the defaults.
type GenericConfig[T any] struct {
	// Make builds one ready item. It is called by background workers (with
	// a context that is cancelled by Close) and by Get when the cache is
	// empty (with Get's context). It must be safe for concurrent use, and
	// on error it must leave nothing behind.
	Make func(ctx context.Context) (T, error)
	// Destroy frees an item Make built that nobody took (Close, or a
	// background Make finishing after Close). It must be safe for
	// concurrent use.
	Destroy func(ctx context.Context, item T) error
	// Target is how many ready items the background workers keep. 0 turns
	// the background refill off: Get then always calls Make.
	Target int
	// MaxInFlight caps concurrent background Make calls. Default 1: one
	// worker refills the cache item after item, which keeps the refill
	// from competing with the requests it serves.
	MaxInFlight int
	// MinBackoff is the first delay after a failed background Make; it
	// doubles after each further failure, up to MaxBackoff. Defaults
	// DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Logger gets refill failures (warn) and lifecycle events (debug).
	// The zero value logs nothing.
	Logger zerolog.Logger
}

// GenericStats is a snapshot of a Generic cache, for metrics.
type GenericStats struct {
	Ready      int    // items in the cache now
	Making     int    // background workers (building or backing off)
	Hits       uint64 // Get calls served from the cache
	Misses     uint64 // Get calls that had to call Make themselves
	MakeErrors uint64 // failed background Make calls
}

// Generic is the generic sandbox cache: ready items of type T not yet bound
// to any function, refilled in the background to a target size. See the
// package documentation for the policy. It is safe for concurrent use.
type Generic[T any] struct {
	cfg GenericConfig[T]
	log zerolog.Logger

	ctx    context.Context // background Make calls; cancelled by Close
	cancel context.CancelFunc

	mu       sync.Mutex
	ready    []T // oldest first
	workers  int
	failures int  // consecutive background failures
	closed   bool // no more Get; workers stop; late items are destroyed by their worker
	stats    GenericStats
	wg       sync.WaitGroup // workers
}

// NewGeneric starts a generic cache and its background refill, which runs
// until Close.
func NewGeneric[T any](cfg GenericConfig[T]) (*Generic[T], error) {
	if cfg.Make == nil || cfg.Destroy == nil {
		return nil, fmt.Errorf("generic cache: Make and Destroy are required: %w", ErrInvalid)
	}
	if cfg.Target < 0 || cfg.MaxInFlight < 0 || cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 {
		return nil, fmt.Errorf("generic cache: negative size or backoff: %w", ErrInvalid)
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 1
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	g := &Generic[T]{cfg: cfg, log: cfg.Logger}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.mu.Lock()
	g.refillLocked()
	g.mu.Unlock()
	return g, nil
}

// Get takes a ready item, or builds one with Make on the caller's goroutine
// when the cache is empty; fromCache says which. It never waits for the
// background refill. The caller owns the item: Close does not destroy it.
func (g *Generic[T]) Get(ctx context.Context) (item T, fromCache bool, err error) {
	item, ok, err := g.take()
	if ok || err != nil {
		return item, ok, err
	}
	item, err = g.cfg.Make(ctx)
	if err != nil {
		return item, false, fmt.Errorf("make generic sandbox: %w", err)
	}
	return item, false, nil
}

// TryGet takes a ready item if there is one, and never builds one itself:
// for a caller whose own way without the cache is cheaper than Make. ok is
// false when the cache is empty or closed. Like Get it counts a hit or a
// miss and wakes the refill.
func (g *Generic[T]) TryGet() (item T, ok bool) {
	item, ok, _ = g.take()
	return item, ok
}

// take takes the oldest ready item, if any; err is ErrClosed after Close.
func (g *Generic[T]) take() (item T, ok bool, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return item, false, ErrClosed
	}
	defer g.refillLocked()
	if len(g.ready) == 0 {
		g.stats.Misses++
		return item, false, nil
	}
	item = g.ready[0]
	var zero T
	g.ready[0] = zero // let the item go when the caller drops it
	g.ready = g.ready[1:]
	g.stats.Hits++
	return item, true, nil
}

// Stats returns a snapshot of the cache's counters.
func (g *Generic[T]) Stats() GenericStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.stats
	s.Ready = len(g.ready)
	s.Making = g.workers
	return s
}

// Close stops the refill, cancels background Make calls and destroys every
// ready item. It then waits, until ctx is done, for the background workers
// to return; a worker that finishes later destroys its item itself. Get
// fails with ErrClosed afterwards. Close is idempotent; only the first call
// destroys anything.
func (g *Generic[T]) Close(ctx context.Context) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	ready := g.ready
	g.ready = nil
	g.mu.Unlock()
	g.cancel()

	var errs []error
	for _, item := range ready {
		if err := g.cfg.Destroy(ctx, item); err != nil {
			errs = append(errs, fmt.Errorf("destroy generic sandbox: %w", err))
		}
	}
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("wait for generic cache refill: %w", ctx.Err()))
	}
	g.log.Debug().Int("destroyed", len(ready)).Msg("generic cache closed")
	return errors.Join(errs...)
}

// refillLocked starts workers until enough are running to reach Target.
func (g *Generic[T]) refillLocked() {
	for !g.closed && g.workers < g.cfg.MaxInFlight && len(g.ready)+g.workers < g.cfg.Target {
		g.workers++
		g.wg.Add(1)
		go g.work()
	}
}

// work builds items until the cache (with the other workers' items still
// to come) reaches Target. After a failure it sleeps for the current
// backoff, so a broken Make costs one call per backoff period per worker.
func (g *Generic[T]) work() {
	defer g.wg.Done()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		start := time.Now()
		item, err := g.cfg.Make(g.ctx)

		g.mu.Lock()
		if err != nil {
			g.stats.MakeErrors++
			g.failures++
			delay, failures, closed := g.backoffLocked(), g.failures, g.closed
			if closed {
				g.workers--
				g.mu.Unlock()
				return
			}
			g.mu.Unlock()
			g.log.Warn().Err(err).Int("failures", failures).Dur("retry_in", delay).Msg("generic cache: make failed")
			if timer == nil {
				timer = time.NewTimer(delay)
			} else {
				timer.Reset(delay)
			}
			select {
			case <-timer.C:
			case <-g.ctx.Done():
				g.exit()
				return
			}
			g.mu.Lock()
		} else {
			g.failures = 0
			if g.closed {
				g.workers--
				g.mu.Unlock()
				// Close has already destroyed the cache; nobody else will
				// see this item.
				if err := g.cfg.Destroy(context.Background(), item); err != nil {
					g.log.Warn().Err(err).Msg("generic cache: destroy after close")
				}
				return
			}
			g.ready = append(g.ready, item)
			g.log.Debug().Dur("dur", time.Since(start)).Int("ready", len(g.ready)).Msg("generic cache: refilled")
		}
		// Stay only if the cache still needs this worker's next item.
		if g.closed || len(g.ready)+g.workers > g.cfg.Target {
			g.workers--
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
	}
}

func (g *Generic[T]) exit() {
	g.mu.Lock()
	g.workers--
	g.mu.Unlock()
}

// backoffLocked is MinBackoff doubled once per consecutive failure beyond
// the first, capped at MaxBackoff.
func (g *Generic[T]) backoffLocked() time.Duration {
	d := g.cfg.MinBackoff
	for i := 1; i < g.failures && d < g.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, g.cfg.MaxBackoff)
}
