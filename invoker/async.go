package invoker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Retention of asynchronous results.
const (
	// AsyncResultTTL is how long a finished asynchronous invocation's
	// result is kept.
	AsyncResultTTL = 15 * time.Minute
	// AsyncMaxResults caps the invocations remembered (queued, running
	// and finished); beyond it the oldest finished ones are forgotten.
	AsyncMaxResults = 10000
	// AsyncMaxResultBytes caps the payload bytes of the finished results
	// kept: beyond it the oldest finished ones are forgotten first.
	AsyncMaxResultBytes = 128 << 20
)

// invokeFunc is the synchronous path the async queue runs its jobs on.
type invokeFunc func(ctx context.Context, name string, payload []byte, o InvokeOptions) (*Result, error)

// asyncQueue runs invocations in the background: a bounded in-memory queue
// served by a few workers, and a bounded table of outcomes for
// AsyncResult.
//
// Delivery is at least once while the process lives: a failed attempt is
// retried with backoff per retry, and an event that fails every attempt
// goes to the dead-letter list (see afterAttempt in localqueue.go). An
// event keeps its ID, which the handler sees as aws_request_id, across
// attempts: it is the idempotency key. A job is lost if the process ends
// before it ran; a backup copy upstream (issue 6) fits in here: a job
// carries what a retry needs, and outcomes are recorded in one place
// (finish).
type asyncQueue struct {
	invoke invokeFunc
	log    zerolog.Logger
	ttl    time.Duration
	max    int
	now    func() time.Time

	jobs chan *asyncJob
	// runCtx is what jobs run under; cancelled when close gives up
	// waiting.
	runCtx    context.Context
	cancelRun context.CancelFunc
	wg        sync.WaitGroup

	mu      sync.Mutex
	closed  bool // close began: queued jobs are not started any more
	results map[string]*asyncEntry
	order   []string // IDs, oldest first
	bytes   int      // payload bytes of the finished results kept
	// lastPrune is when pruneLocked last looked for expired entries.
	lastPrune time.Time

	retry    RetryPolicy // zero: one attempt
	dead     *deadLetterList
	retrying map[*asyncJob]*time.Timer // jobs waiting for their next attempt
}

type asyncJob struct {
	id      string
	name    string
	payload []byte
	opts    InvokeOptions

	trace     *Trace // the sending function's, or nil
	localOnly bool   // delivered by the upstream: never passed on
	queued    time.Time
	attempts  int // made so far
}

type asyncEntry struct {
	done     bool
	res      *Result
	err      error
	finished time.Time
	// waiters learn the final outcome (enqueue's done).
	waiters []func(error)
	// handedOn marks an event this host gave to the upstream: not a run,
	// so the event is not a duplicate if it comes back here.
	handedOn bool
}

func newAsyncQueue(invoke invokeFunc, workers, size int, log zerolog.Logger) *asyncQueue {
	workers = max(workers, 1)
	q := &asyncQueue{
		invoke: invoke, log: log, ttl: AsyncResultTTL, max: AsyncMaxResults, now: time.Now,
		jobs:    make(chan *asyncJob, max(size, 0)),
		results: map[string]*asyncEntry{},
		dead:    &deadLetterList{max: DefaultDeadLetters},
	}
	q.runCtx, q.cancelRun = context.WithCancel(context.Background())
	for range workers {
		q.wg.Add(1)
		go q.work()
	}
	return q
}

func newAsyncID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// newEvent is an event for name with a new ID, which is also its request
// ID unless o names one.
func newEvent(name string, payload []byte, o InvokeOptions, tr *Trace) (Event, error) {
	id, err := newAsyncID()
	if err != nil {
		return Event{}, fmt.Errorf("async invocation id: %w", err)
	}
	ev := Event{ID: id, RequestID: o.RequestID, Function: name, Payload: payload, Trace: tr}
	if ev.RequestID == "" {
		ev.RequestID = id
	}
	return ev, nil
}

// submit queues a job and returns its ID; ErrOverloaded when the queue is
// full, ErrClosed after close.
func (q *asyncQueue) submit(name string, payload []byte, o InvokeOptions) (string, error) {
	ev, err := newEvent(name, payload, o, nil)
	if err != nil {
		return "", err
	}
	if err := q.enqueue(ev, o.Timeout, false, nil); err != nil {
		return "", err
	}
	return ev.ID, nil
}

// enqueue queues ev under its ID. done, if not nil, is called once with
// the event's final outcome (see finish). An ID already known is not run
// again: done follows the earlier entry. localOnly marks an event that must
// run here, never be passed on (one delivered by the upstream).
func (q *asyncQueue) enqueue(ev Event, timeout time.Duration, localOnly bool, done func(error)) error {
	o := InvokeOptions{RequestID: ev.RequestID, Timeout: timeout}
	if o.RequestID == "" {
		o.RequestID = ev.ID
	}
	job := &asyncJob{id: ev.ID, name: ev.Function, payload: append([]byte(nil), ev.Payload...), opts: o,
		trace: ev.Trace, localOnly: localOnly, queued: q.now()}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if e := q.results[ev.ID]; e != nil && !e.handedOn {
		finished := e.done
		if !finished && done != nil {
			e.waiters = append(e.waiters, done)
		}
		q.mu.Unlock()
		if finished && done != nil {
			done(nil)
		}
		return nil
	}
	select {
	case q.jobs <- job:
	default:
		q.mu.Unlock()
		return fmt.Errorf("%w: async queue full (%d waiting)", ErrOverloaded, cap(q.jobs))
	}
	e := &asyncEntry{}
	if done != nil {
		e.waiters = []func(error){done}
	}
	if q.results[ev.ID] == nil {
		q.order = append(q.order, ev.ID)
	}
	// An event this host handed on and now runs itself replaces the
	// marker.
	q.results[ev.ID] = e
	q.pruneLocked()
	q.mu.Unlock()
	return nil
}

// handedOn records that the event id went to the upstream: its outcome
// is kept by the host that runs it, which result says.
func (q *asyncQueue) handedOn(id, name, why string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.results[id] != nil {
		return
	}
	q.results[id] = &asyncEntry{done: true, handedOn: true, finished: q.now(),
		err: fmt.Errorf("%w: the event was handed to the hosts that serve %q through the upstream (%s); its outcome is kept by the host that runs it", ErrNotFound, name, why)}
	q.order = append(q.order, id)
	q.pruneLocked()
}

func (q *asyncQueue) work() {
	defer q.wg.Done()
	for job := range q.jobs {
		q.mu.Lock()
		closed := q.closed
		q.mu.Unlock()
		if closed {
			q.finish(job.id, nil, fmt.Errorf("invoker closed before the invocation started: %w", ErrClosed))
			continue
		}
		ctx := q.runCtx
		if job.trace != nil {
			ctx = withTrace(ctx, job.trace)
		}
		if job.localOnly {
			ctx = withLocalOnly(ctx)
		}
		res, err := q.invoke(ctx, job.name, job.payload, job.opts)
		if err != nil {
			q.log.Debug().Err(err).Str("func", job.name).Str("id", job.id).Msg("async invocation failed")
		}
		if q.afterAttempt(job, res, err) {
			continue
		}
		q.finish(job.id, res, err)
	}
}

// finish records the final outcome of the event id and tells its waiters:
// nil when it ran (whatever its handler did), or an error wrapping
// ErrClosed when this queue closed before the event could finish, its
// retries included, so that an upstream can give it to another host.
func (q *asyncQueue) finish(id string, res *Result, err error) {
	q.mu.Lock()
	e := q.results[id]
	if e == nil { // forgotten meanwhile
		q.mu.Unlock()
		return
	}
	if res != nil {
		// Keep an exact-size copy: the result may sit here for minutes.
		kept := *res
		kept.Payload = append([]byte(nil), res.Payload...)
		res = &kept
		q.bytes += len(kept.Payload)
	}
	e.done, e.res, e.err, e.finished = true, res, err, q.now()
	waiters := e.waiters
	e.waiters = nil
	cut := q.closed && (err != nil || (res != nil && res.FunctionError))
	q.pruneLocked()
	q.mu.Unlock()
	var werr error
	switch {
	case errors.Is(err, ErrClosed):
		werr = err
	case cut:
		werr = fmt.Errorf("%w: the invoker closed before the event's attempts were over", ErrClosed)
	}
	for _, w := range waiters {
		w(werr)
	}
}

// result implements Service.AsyncResult: once done, the invocation's
// Result or its error (an error with done true is the invocation's, not
// the lookup's).
func (q *asyncQueue) result(id string) (*Result, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pruneLocked()
	e := q.results[id]
	if e == nil {
		return nil, false, fmt.Errorf("async invocation %q: %w", id, ErrNotFound)
	}
	if !e.done {
		return nil, false, nil
	}
	if e.err != nil {
		return nil, true, fmt.Errorf("async invocation %s: %w", id, e.err)
	}
	return e.res, true, nil
}

// pruneLocked forgets finished entries older than the TTL and, beyond the
// count or the byte cap, the oldest finished ones.
//
// The expiry scan runs at most once a second: the table holds up to
// AsyncMaxResults entries, too many to walk on every call.
func (q *asyncQueue) pruneLocked() {
	now := q.now()
	over := len(q.order) - q.max
	if over <= 0 && q.bytes <= AsyncMaxResultBytes && now.Sub(q.lastPrune) < time.Second && !now.Before(q.lastPrune) {
		return
	}
	q.lastPrune = now
	kept := q.order[:0]
	for _, id := range q.order {
		e := q.results[id]
		if e.done && (now.Sub(e.finished) > q.ttl || over > 0 || q.bytes > AsyncMaxResultBytes) {
			delete(q.results, id)
			if e.res != nil {
				q.bytes -= len(e.res.Payload)
			}
			over--
			continue
		}
		kept = append(kept, id)
	}
	clear(q.order[len(kept):])
	q.order = kept
}

// close stops taking jobs, fails the queued ones and waits for the running
// ones until ctx is done; then it cancels them and waits for the workers.
func (q *asyncQueue) close(ctx context.Context) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	close(q.jobs)
	q.mu.Unlock()
	q.stopRetries()
	done := make(chan struct{})
	go func() { q.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("wait for async invocations: %w", ctx.Err())
		q.cancelRun()
		<-done
	}
	q.cancelRun()
	return err
}
