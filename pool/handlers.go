package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Instance is a warm function instance as the handler cache sees it. The
// invoker implements it over a zygote-forked process and its sandbox.
//
// Invariants the cache relies on:
//   - Pause freezes the instance and returns once it is frozen. When ctx is
//     cancelled first it returns promptly; the instance may then be frozen
//     or not, and Unpause must bring it back either way.
//   - Unpause thaws the instance. On an instance that is already running
//     (never paused, or after a cancelled Pause) it succeeds and does
//     nothing.
//   - MemoryBytes reports the instance's real memory charge (its cgroup's
//     usage). It must be cheap, and safe to call at any time, concurrently
//     with any other method, including Close; after Close it may fail.
//   - Close kills the instance and frees its sandbox. The cache calls it
//     exactly once.
//   - The cache never calls Pause, Unpause and Close of one instance
//     concurrently with each other, and never while it is leased.
type Instance interface {
	Pause(ctx context.Context) error
	Unpause(ctx context.Context) error
	MemoryBytes(ctx context.Context) (uint64, error)
	Close(ctx context.Context) error
}

// Start says how a Lease's instance was found, for metrics.
type Start uint8

const (
	// StartCold: the caller built the instance and registered it with Add.
	StartCold Start = iota
	// StartWarm: an idle running instance.
	StartWarm
	// StartPaused: a paused (or pausing) instance, resumed for this lease.
	StartPaused
)

func (s Start) String() string {
	switch s {
	case StartCold:
		return "cold"
	case StartWarm:
		return "warm"
	case StartPaused:
		return "paused"
	}
	return fmt.Sprintf("Start(%d)", uint8(s))
}

// Defaults of HandlersConfig.
const (
	DefaultPauseAfter       = time.Second
	DefaultIdleTimeout      = 10 * time.Minute
	DefaultSampleInterval   = time.Second
	DefaultPauseConcurrency = 4
)

// HandlersConfig configures a Handlers cache. Zero values mean the
// defaults.
type HandlersConfig struct {
	// PauseAfter is how long an instance stays idle and running before the
	// janitor pauses it. Default DefaultPauseAfter; negative: never pause.
	PauseAfter time.Duration
	// IdleTimeout closes an instance that has not been leased for this
	// long, paused or not. Default DefaultIdleTimeout; negative: never.
	IdleTimeout time.Duration
	// MaxIdlePerKey caps the idle and paused instances of one key; a
	// Release beyond it closes the key's least recently used one (paused
	// first). 0: no cap.
	MaxIdlePerKey int
	// MemoryBudget caps the summed memory charge of all instances, leased
	// or not, as last sampled; beyond it the janitor evicts (see the
	// package documentation). 0: no budget.
	MemoryBudget uint64
	// SampleInterval is how often the janitor reads every instance's
	// MemoryBytes. Default DefaultSampleInterval.
	SampleInterval time.Duration
	// SweepInterval is how often the janitor looks for instances to pause,
	// time out or evict. Default: a quarter of the smallest of PauseAfter,
	// IdleTimeout and SampleInterval, between 5 ms and 1 s.
	SweepInterval time.Duration
	// PauseConcurrency caps the pauses in flight. Default
	// DefaultPauseConcurrency.
	PauseConcurrency int
	// Logger gets pauses and evictions (debug) and failures (warn). The
	// zero value logs nothing.
	Logger zerolog.Logger
}

func (c *HandlersConfig) setDefaults() error {
	if c.MaxIdlePerKey < 0 || c.PauseConcurrency < 0 || c.SampleInterval < 0 || c.SweepInterval < 0 {
		return fmt.Errorf("handler cache: negative limit or interval: %w", ErrInvalid)
	}
	if c.PauseAfter == 0 {
		c.PauseAfter = DefaultPauseAfter
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.SampleInterval == 0 {
		c.SampleInterval = DefaultSampleInterval
	}
	if c.PauseConcurrency == 0 {
		c.PauseConcurrency = DefaultPauseConcurrency
	}
	if c.SweepInterval == 0 {
		base := c.SampleInterval
		if c.PauseAfter > 0 {
			base = min(base, c.PauseAfter)
		}
		if c.IdleTimeout > 0 {
			base = min(base, c.IdleTimeout)
		}
		c.SweepInterval = min(max(base/4, 5*time.Millisecond), time.Second)
	}
	return nil
}

// Counts are the instances of one key, or of the whole cache.
type Counts struct {
	Busy   int // leased (including those being resumed for a lease)
	Idle   int // idle and running (including those being paused)
	Paused int
}

// HandlersStats is a snapshot of a Handlers cache, for metrics.
type HandlersStats struct {
	Counts
	Keys        int    // keys with at least one instance
	MemoryBytes uint64 // summed memory charge at the last samples
	Hits        uint64 // Acquire calls that got an idle running instance
	Resumes     uint64 // Acquire calls that got a paused instance
	Misses      uint64 // Acquire calls that found nothing (ErrMiss)
	Added       uint64 // instances registered with Add
	Pauses      uint64 // completed pauses
	Evictions   uint64 // closed for the memory budget or MaxIdlePerKey
	Expired     uint64 // closed after IdleTimeout
	Unhealthy   uint64 // closed by Release(false)
	Errors      uint64 // failed Pause, Unpause or Close calls
}

type entryState uint8

const (
	stBusy    entryState = iota // leased, or being resumed for a lease
	stIdle                      // in key.idle
	stPausing                   // in key.pausing, unless claimed
	stPaused                    // in key.paused
	stGone                      // out of the cache; being closed
)

// entry is one instance. Every field but inst is guarded by Handlers.mu.
type entry struct {
	key      *keyState
	inst     Instance
	state    entryState
	lastUsed time.Time // last Release, or Add
	mem      uint64    // last sample; 0 before the first

	// Set while stPausing.
	cancelPause context.CancelFunc
	pauseDone   chan struct{} // closed when Pause has returned and the entry is settled
	claimed     bool          // an Acquire has taken it and waits on pauseDone
}

// keyState holds one key's instances. The idle and paused slices are
// sorted by lastUsed, oldest first: Acquire takes from the end (most
// recently used, the warmest), the janitor and eviction from the front.
type keyState struct {
	name    string
	idle    []*entry
	paused  []*entry
	pausing []*entry
	busy    int
}

func (k *keyState) empty() bool {
	return k.busy == 0 && len(k.idle) == 0 && len(k.paused) == 0 && len(k.pausing) == 0
}

func (k *keyState) counts() Counts {
	return Counts{Busy: k.busy, Idle: len(k.idle) + len(k.pausing), Paused: len(k.paused)}
}

// Handlers is the handler cache: warm instances per function key, one
// lease at a time per instance. See the package documentation for the
// policies. It is safe for concurrent use.
type Handlers struct {
	cfg HandlersConfig
	log zerolog.Logger
	now func() time.Time

	ctx    context.Context // janitor, samples, pauses; cancelled by Close
	cancel context.CancelFunc

	mu         sync.Mutex
	keys       map[string]*keyState
	entries    map[*entry]struct{} // every entry not yet stGone
	memTotal   uint64              // sum of entries' mem
	pausing    int
	live       int // entries whose Close has not returned
	closed     bool
	gone       chan struct{} // closed once closed and live == 0
	goneClosed bool
	closeErrs  []error // from closes after Close began
	stats      HandlersStats

	lastSample  time.Time // janitor only
	janitorDone chan struct{}
}

// NewHandlers starts a handler cache and its janitor goroutine, which runs
// until Close.
func NewHandlers(cfg HandlersConfig) (*Handlers, error) {
	return newHandlers(cfg, time.Now, true)
}

// newHandlers lets tests bring their own clock and run the janitor's
// sweeps themselves.
func newHandlers(cfg HandlersConfig, now func() time.Time, janitor bool) (*Handlers, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	h := &Handlers{
		cfg:         cfg,
		log:         cfg.Logger,
		now:         now,
		keys:        make(map[string]*keyState),
		entries:     make(map[*entry]struct{}),
		gone:        make(chan struct{}),
		janitorDone: make(chan struct{}),
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if janitor {
		go h.janitor()
	} else {
		close(h.janitorDone)
	}
	return h, nil
}

// Lease is the exclusive use of one instance, from Acquire or Add until
// Release.
type Lease struct {
	h        *Handlers
	e        *entry
	start    Start
	released bool // guarded by h.mu
}

// Instance is the leased instance. It is the caller's until Release.
func (l *Lease) Instance() Instance { return l.e.inst }

// Key is the key the instance is cached under.
func (l *Lease) Key() string { return l.e.key.name }

// Start says how the instance was found.
func (l *Lease) Start() Start { return l.start }

// Release gives the instance back. With healthy true it becomes idle (and
// is paused, timed out or evicted later by the janitor); with healthy false
// (the request timed out, the instance crashed or is otherwise in doubt)
// it is closed. After Close it is closed either way. Closing happens on
// another goroutine: Release never blocks on it. Only the first Release of
// a Lease counts.
func (l *Lease) Release(healthy bool) {
	h, e := l.h, l.e
	now := h.now()
	h.mu.Lock()
	if l.released {
		h.mu.Unlock()
		return
	}
	l.released = true
	ks := e.key
	ks.busy--
	if !healthy || h.closed {
		reason := "closed"
		if !healthy {
			reason = "unhealthy"
			h.stats.Unhealthy++
		}
		h.removeLocked(e)
		h.mu.Unlock()
		h.retire(e, reason, 0)
		return
	}
	e.lastUsed = now
	e.state = stIdle
	ks.idle = append(ks.idle, e)
	var victim *entry
	if limit := h.cfg.MaxIdlePerKey; limit > 0 && len(ks.idle)+len(ks.paused)+len(ks.pausing) > limit {
		if len(ks.paused) > 0 {
			victim = ks.paused[0]
		} else {
			victim = ks.idle[0]
		}
		h.removeLocked(victim)
		h.stats.Evictions++
	}
	h.mu.Unlock()
	if victim != nil {
		h.retire(victim, "max idle per key", now.Sub(victim.lastUsed))
	}
}

// Acquire leases an idle instance of key: a running one if there is one,
// else a paused one, which it resumes first (see the package
// documentation). It returns ErrMiss when the key has no idle instance;
// the caller then builds one and registers it with Add. A resume that
// fails closes that instance and tries the next.
func (h *Handlers) Acquire(ctx context.Context, key string) (*Lease, error) {
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, ErrClosed
		}
		ks := h.keys[key]
		if ks == nil {
			h.stats.Misses++
			h.mu.Unlock()
			return nil, ErrMiss
		}
		if n := len(ks.idle); n > 0 {
			e := ks.idle[n-1]
			ks.idle[n-1] = nil
			ks.idle = ks.idle[:n-1]
			e.state = stBusy
			ks.busy++
			h.stats.Hits++
			h.mu.Unlock()
			return &Lease{h: h, e: e, start: StartWarm}, nil
		}

		var e *entry
		if n := len(ks.paused); n > 0 {
			e = ks.paused[n-1]
			ks.paused[n-1] = nil
			ks.paused = ks.paused[:n-1]
			e.state = stBusy
			ks.busy++
			h.mu.Unlock()
		} else if n := len(ks.pausing); n > 0 {
			// Take it over from the janitor: cancel the pause and wait
			// for Pause to return, which a cancelled Pause does promptly.
			e = ks.pausing[n-1]
			ks.pausing[n-1] = nil
			ks.pausing = ks.pausing[:n-1]
			e.claimed = true
			ks.busy++
			e.cancelPause()
			done := e.pauseDone
			h.mu.Unlock()
			select {
			case <-done:
			case <-ctx.Done():
				h.mu.Lock()
				ks.busy--
				if e.state == stPausing {
					// The pause is still running: leave it to the janitor.
					e.claimed = false
					ks.pausing = append(ks.pausing, e)
					h.mu.Unlock()
				} else {
					h.parkLocked(e)
				}
				return nil, fmt.Errorf("acquire %q: %w", key, ctx.Err())
			}
		} else {
			h.stats.Misses++
			h.mu.Unlock()
			return nil, ErrMiss
		}

		err := e.inst.Unpause(ctx)
		h.mu.Lock()
		if err == nil {
			h.stats.Resumes++
			h.mu.Unlock()
			return &Lease{h: h, e: e, start: StartPaused}, nil
		}
		ks.busy--
		if ctx.Err() != nil {
			// Most likely the caller's deadline, not the instance: keep it.
			h.parkLocked(e)
			return nil, fmt.Errorf("resume %q: %w", key, err)
		}
		h.stats.Errors++
		h.removeLocked(e)
		h.mu.Unlock()
		h.log.Warn().Err(err).Str("func", key).Msg("handler cache: resume failed; closing instance")
		h.retire(e, "resume failed", 0)
	}
}

// parkLocked puts an entry that may be paused (an Acquire gave up on it)
// back among the paused ones, or closes it if the cache is closed. It
// unlocks h.mu.
func (h *Handlers) parkLocked(e *entry) {
	if h.closed {
		h.removeLocked(e)
		h.mu.Unlock()
		h.retire(e, "closed", 0)
		return
	}
	e.state = stPaused
	e.key.paused = insertByLastUsed(e.key.paused, e)
	h.mu.Unlock()
}

// Add registers an instance the caller built for key after a miss, and
// returns it leased. After Close the instance is still leased to the
// caller, and closed on Release.
func (h *Handlers) Add(key string, inst Instance) *Lease {
	now := h.now()
	h.mu.Lock()
	ks := h.keys[key]
	if ks == nil {
		ks = &keyState{name: key}
		h.keys[key] = ks
	}
	e := &entry{key: ks, inst: inst, state: stBusy, lastUsed: now}
	ks.busy++
	h.entries[e] = struct{}{}
	h.live++
	h.stats.Added++
	h.mu.Unlock()
	return &Lease{h: h, e: e, start: StartCold}
}

// Counts returns the instances of key.
func (h *Handlers) Counts(key string) Counts {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ks := h.keys[key]; ks != nil {
		return ks.counts()
	}
	return Counts{}
}

// CountsByKey returns the instances of every key that has any.
func (h *Handlers) CountsByKey() map[string]Counts {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := make(map[string]Counts, len(h.keys))
	for name, ks := range h.keys {
		m[name] = ks.counts()
	}
	return m
}

// Stats returns a snapshot of the cache's counts and counters.
func (h *Handlers) Stats() HandlersStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.stats
	s.Keys = len(h.keys)
	s.MemoryBytes = h.memTotal
	for _, ks := range h.keys {
		c := ks.counts()
		s.Busy += c.Busy
		s.Idle += c.Idle
		s.Paused += c.Paused
	}
	return s
}

// Close stops the janitor, cancels pauses in flight and closes every idle
// and paused instance. Leased instances are closed as they are released;
// Close waits for that and for every close to finish, until ctx is done.
// Acquire fails with ErrClosed afterwards. It returns the errors of the
// instances' Close calls. Later calls only wait.
func (h *Handlers) Close(ctx context.Context) error {
	h.mu.Lock()
	first := !h.closed
	var victims []*entry
	if first {
		h.closed = true
		for _, ks := range h.keys {
			victims = append(victims, ks.paused...)
			victims = append(victims, ks.idle...)
		}
		for _, e := range victims {
			h.removeLocked(e)
		}
		// Entries being paused are closed by their pause goroutine; busy
		// ones by Release.
		h.checkGoneLocked()
	}
	h.mu.Unlock()
	h.cancel()
	for _, e := range victims {
		h.retireCtx(ctx, e, "closed", 0)
	}

	var errs []error
	select {
	case <-h.janitorDone:
	case <-ctx.Done():
	}
	select {
	case <-h.gone:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("close handler cache: %w", ctx.Err()))
	}
	if first {
		h.mu.Lock()
		errs = append(h.closeErrs, errs...)
		h.closeErrs = nil
		h.mu.Unlock()
	}
	return errors.Join(errs...)
}

// removeLocked takes e out of the cache's lists and accounting (not out of
// live: that happens when its Close returns).
func (h *Handlers) removeLocked(e *entry) {
	ks := e.key
	switch e.state {
	case stIdle:
		ks.idle = removeEntry(ks.idle, e)
	case stPaused:
		ks.paused = removeEntry(ks.paused, e)
	case stPausing:
		if !e.claimed {
			ks.pausing = removeEntry(ks.pausing, e)
		}
	}
	e.state = stGone
	delete(h.entries, e)
	h.memTotal -= e.mem
	if ks.empty() && h.keys[ks.name] == ks {
		delete(h.keys, ks.name)
	}
}

// retire closes a removed entry in the background.
func (h *Handlers) retire(e *entry, reason string, idle time.Duration) {
	h.retireCtx(context.Background(), e, reason, idle)
}

func (h *Handlers) retireCtx(ctx context.Context, e *entry, reason string, idle time.Duration) {
	h.log.Debug().Str("func", e.key.name).Str("reason", reason).Dur("dur", idle).Uint64("bytes", e.mem).Msg("handler cache: closing instance")
	go func() {
		err := e.inst.Close(ctx)
		h.mu.Lock()
		h.live--
		if err != nil {
			h.stats.Errors++
			if h.closed {
				h.closeErrs = append(h.closeErrs, fmt.Errorf("close instance of %q: %w", e.key.name, err))
			}
		}
		h.checkGoneLocked()
		h.mu.Unlock()
		if err != nil {
			h.log.Warn().Err(err).Str("func", e.key.name).Msg("handler cache: close failed")
		}
	}()
}

func (h *Handlers) checkGoneLocked() {
	if h.closed && h.live == 0 && !h.goneClosed {
		h.goneClosed = true
		close(h.gone)
	}
}

func (h *Handlers) janitor() {
	defer close(h.janitorDone)
	t := time.NewTicker(h.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
			h.sweep(h.ctx)
		}
	}
}

// sweep is one round of the janitor: sample memory when due, then close
// timed-out instances, evict over the budget, and pause instances idle
// for PauseAfter. It returns once the pauses it started have finished;
// closes go on in the background.
func (h *Handlers) sweep(ctx context.Context) {
	now := h.now()
	if h.lastSample.IsZero() || now.Sub(h.lastSample) >= h.cfg.SampleInterval {
		h.sample(ctx)
		h.lastSample = now
	}

	type victim struct {
		e      *entry
		reason string
		idle   time.Duration
	}
	var victims []victim
	var pauses []*entry

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	if h.cfg.IdleTimeout > 0 {
		for _, ks := range h.keys {
			for _, list := range [][]*entry{ks.paused, ks.idle} {
				for _, e := range list {
					if idle := now.Sub(e.lastUsed); idle >= h.cfg.IdleTimeout {
						victims = append(victims, victim{e, "idle timeout", idle})
					}
				}
			}
		}
		for _, v := range victims {
			h.removeLocked(v.e)
			h.stats.Expired++
		}
	}
	if budget := h.cfg.MemoryBudget; budget > 0 && h.memTotal > budget {
		for _, e := range h.evictionOrderLocked() {
			if h.memTotal <= budget {
				break
			}
			victims = append(victims, victim{e, "memory budget", now.Sub(e.lastUsed)})
			h.removeLocked(e)
			h.stats.Evictions++
		}
		if h.memTotal > budget {
			h.log.Debug().Uint64("bytes", h.memTotal).Uint64("budget", budget).Msg("handler cache: over memory budget with nothing left to evict")
		}
	}
	if h.cfg.PauseAfter > 0 {
		var due []*entry
		for _, ks := range h.keys {
			for _, e := range ks.idle {
				if now.Sub(e.lastUsed) < h.cfg.PauseAfter {
					break // sorted: the rest are younger
				}
				due = append(due, e)
			}
		}
		slices.SortFunc(due, byLastUsed)
		for _, e := range due {
			if h.pausing >= h.cfg.PauseConcurrency {
				break
			}
			ks := e.key
			ks.idle = removeEntry(ks.idle, e)
			ks.pausing = append(ks.pausing, e)
			e.state = stPausing
			e.claimed = false
			e.pauseDone = make(chan struct{})
			var pctx context.Context
			pctx, e.cancelPause = context.WithCancel(ctx)
			h.pausing++
			pauses = append(pauses, e)
			go h.pause(pctx, e, now.Sub(e.lastUsed))
		}
	}
	h.mu.Unlock()

	for _, v := range victims {
		h.retire(v.e, v.reason, v.idle)
	}
	for _, e := range pauses {
		<-e.pauseDone
	}
}

// evictionOrderLocked lists the instances that may be evicted, in the
// order they should go: paused before idle running, least recently used
// first within each. Leased and pausing instances are not candidates.
func (h *Handlers) evictionOrderLocked() []*entry {
	var paused, idle []*entry
	for _, ks := range h.keys {
		paused = append(paused, ks.paused...)
		idle = append(idle, ks.idle...)
	}
	slices.SortFunc(paused, byLastUsed)
	slices.SortFunc(idle, byLastUsed)
	return append(paused, idle...)
}

// pause runs one Pause and settles the entry: paused, or handed to the
// Acquire that claimed it meanwhile, or closed (the pause failed, or the
// cache was closed).
func (h *Handlers) pause(ctx context.Context, e *entry, idle time.Duration) {
	start := time.Now()
	err := e.inst.Pause(ctx)
	took := time.Since(start)

	h.mu.Lock()
	e.cancelPause()
	h.pausing--
	ks := e.key
	retire := ""
	switch {
	case e.claimed:
		// The Acquire waiting on pauseDone owns it now and will Unpause.
		e.state = stBusy
	case h.closed:
		retire = "closed"
	case err != nil:
		h.stats.Errors++
		retire = "pause failed"
	default:
		ks.pausing = removeEntry(ks.pausing, e)
		e.state = stPaused
		ks.paused = insertByLastUsed(ks.paused, e)
		h.stats.Pauses++
	}
	if retire != "" {
		h.removeLocked(e)
	}
	close(e.pauseDone)
	h.mu.Unlock()

	switch {
	case retire != "":
		if err != nil {
			h.log.Warn().Err(err).Str("func", ks.name).Msg("handler cache: pause failed; closing instance")
		}
		h.retire(e, retire, idle)
	case err == nil:
		h.log.Debug().Str("func", ks.name).Dur("dur", took).Dur("idle", idle).Msg("handler cache: paused")
	}
}

// sample reads every instance's memory charge, off the lock.
func (h *Handlers) sample(ctx context.Context) {
	h.mu.Lock()
	es := make([]*entry, 0, len(h.entries))
	for e := range h.entries {
		es = append(es, e)
	}
	h.mu.Unlock()

	mems := make([]uint64, len(es))
	oks := make([]bool, len(es))
	for i, e := range es {
		if ctx.Err() != nil {
			return
		}
		m, err := e.inst.MemoryBytes(ctx)
		if err != nil {
			h.log.Debug().Err(err).Str("func", e.key.name).Msg("handler cache: memory sample failed")
			continue
		}
		mems[i], oks[i] = m, true
	}

	h.mu.Lock()
	for i, e := range es {
		if oks[i] && e.state != stGone {
			h.memTotal = h.memTotal - e.mem + mems[i]
			e.mem = mems[i]
		}
	}
	h.mu.Unlock()
}

func byLastUsed(a, b *entry) int { return a.lastUsed.Compare(b.lastUsed) }

func removeEntry(list []*entry, e *entry) []*entry {
	if i := slices.Index(list, e); i >= 0 {
		return slices.Delete(list, i, i+1)
	}
	return list
}

// insertByLastUsed keeps list sorted by lastUsed, oldest first. Entries
// mostly arrive in order, so the search from the end is short.
func insertByLastUsed(list []*entry, e *entry) []*entry {
	i := len(list)
	for i > 0 && list[i-1].lastUsed.After(e.lastUsed) {
		i--
	}
	return slices.Insert(list, i, e)
}
