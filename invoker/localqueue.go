package invoker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// The local queue carries calls between functions on this host (issue 6,
// after SAND's local message bus): a function's sync call goes straight to
// Invoke, its async events into the asynchronous queue, which delivers them
// at least once, with retries and a dead-letter list. An Upstream
// (upstream.go) takes what this host cannot serve.

// Defaults of the local queue.
const (
	// DefaultAsyncAttempts is how many times an asynchronous event is
	// tried before it is dead-lettered: AWS Lambda's one try and two
	// retries.
	DefaultAsyncAttempts = 3
	// DefaultAsyncBackoff is the wait before the first retry; it doubles
	// for each further one, up to DefaultAsyncMaxBackoff.
	DefaultAsyncBackoff    = time.Second
	DefaultAsyncMaxBackoff = time.Minute
	// DefaultDeadLetters bounds the dead-letter list; beyond it the
	// oldest are forgotten.
	DefaultDeadLetters = 1000
	// CallReserve is what a caller keeps of its remaining time when it
	// calls another function: the callee's deadline is the caller's minus
	// this, so a caller whose callee timed out can still answer.
	CallReserve = 50 * time.Millisecond
)

// RetryPolicy says how the asynchronous queue retries a failed event.
// Timeouts, crashes and overload are always retried; a handler's error
// (FunctionError) too, like AWS Lambda does, unless SkipFunctionErrors.
// Errors no retry can fix (unknown function, invalid or oversize payload)
// are not.
type RetryPolicy struct {
	// Attempts is the number of tries, the first included; below 1: 1.
	Attempts int
	// Backoff is the wait before the first retry, doubled for each next
	// one up to MaxBackoff; a fifth of it is random.
	Backoff, MaxBackoff time.Duration
	// SkipFunctionErrors dead-letters an event whose handler raised at
	// once.
	SkipFunctionErrors bool
}

// DefaultRetryPolicy is AWS Lambda's for asynchronous invocations, with
// shorter waits.
var DefaultRetryPolicy = RetryPolicy{Attempts: DefaultAsyncAttempts, Backoff: DefaultAsyncBackoff, MaxBackoff: DefaultAsyncMaxBackoff}

// DeadLetter is an asynchronous event that failed every attempt.
type DeadLetter struct {
	// ID is the event's ID, its idempotency key (the handler's
	// aws_request_id on every attempt).
	ID       string
	Function string
	Payload  []byte
	// Caller is the function that sent the event ("name@version"), empty
	// for an event from outside.
	Caller   string
	Attempts int
	// Error is the last attempt's error, or the handler's error JSON when
	// FunctionError is set.
	Error         string
	FunctionError bool
	Queued        time.Time
	Failed        time.Time
}

// localConfig is the local queue's part of the invoker's configuration.
type localConfig struct {
	maxDepth    int
	retry       RetryPolicy
	deadLetters int
	upstream    Upstream
}

func defaultLocalConfig() localConfig {
	return localConfig{maxDepth: DefaultMaxCallDepth, retry: DefaultRetryPolicy, deadLetters: DefaultDeadLetters, upstream: NoUpstream{}}
}

func localOption(f func(*localConfig)) Option { return func(c *config) { f(&c.local) } }

// WithMaxCallDepth bounds call chains between functions: a call that would
// make a chain of more than n functions fails with ErrCallDepth, which also
// stops cycles. Default DefaultMaxCallDepth.
func WithMaxCallDepth(n int) Option { return localOption(func(lc *localConfig) { lc.maxDepth = n }) }

// WithAsyncRetry sets how asynchronous events are retried. Default
// DefaultRetryPolicy.
func WithAsyncRetry(p RetryPolicy) Option { return localOption(func(lc *localConfig) { lc.retry = p }) }

// WithDeadLetters bounds the dead-letter list. Default DefaultDeadLetters.
func WithDeadLetters(n int) Option { return localOption(func(lc *localConfig) { lc.deadLetters = n }) }

// WithUpstream sets where calls go that this host cannot serve. Default
// NoUpstream.
func WithUpstream(u Upstream) Option {
	return localOption(func(lc *localConfig) {
		if u != nil {
			lc.upstream = u
		}
	})
}

// retryable says whether another attempt may fix what went wrong.
func (p RetryPolicy) retryable(res *Result, err error) bool {
	switch {
	case err == nil:
		return res != nil && res.FunctionError && !p.SkipFunctionErrors
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalid), errors.Is(err, ErrTooLarge),
		errors.Is(err, ErrClosed), errors.Is(err, ErrCallDepth):
		return false
	}
	return true // timeout, crash, overload, a start that failed
}

// backoff is the wait before attempt number next (2 for the first retry).
func (p RetryPolicy) backoff(next int) time.Duration {
	d := p.Backoff
	for i := 2; i < next && d < p.MaxBackoff; i++ {
		d *= 2
	}
	if p.MaxBackoff > 0 && d > p.MaxBackoff {
		d = p.MaxBackoff
	}
	if d <= 0 {
		return 0
	}
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// deadLetterList is a bounded list of dead letters, oldest first.
type deadLetterList struct {
	mu   sync.Mutex
	max  int
	list []DeadLetter
}

func (l *deadLetterList) add(d DeadLetter) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max <= 0 {
		return
	}
	if len(l.list) >= l.max {
		n := copy(l.list, l.list[len(l.list)-l.max+1:])
		clear(l.list[n:])
		l.list = l.list[:n]
	}
	l.list = append(l.list, d)
}

func (l *deadLetterList) snapshot() []DeadLetter {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]DeadLetter, len(l.list))
	copy(out, l.list)
	return out
}

// setRetry sets the queue's retry policy and dead-letter bound (its
// workers run already).
func (q *asyncQueue) setRetry(p RetryPolicy, deadLetters int) {
	q.mu.Lock()
	q.retry = p
	q.mu.Unlock()
	q.dead.mu.Lock()
	q.dead.max = deadLetters
	q.dead.mu.Unlock()
}

// afterAttempt decides what follows an attempt of job that ended with res
// and err: true when a retry is scheduled (the job's entry stays pending);
// false when the outcome is final, in which case a failure has been
// dead-lettered and the caller records the outcome.
func (q *asyncQueue) afterAttempt(job *asyncJob, res *Result, err error) bool {
	job.attempts++
	failed := err != nil || (res != nil && res.FunctionError)
	if !failed {
		return false
	}
	q.mu.Lock()
	p := q.retry
	q.mu.Unlock()
	if n := job.attempts; n < max(p.Attempts, 1) && p.retryable(res, err) {
		name, id := job.name, job.id // job is another worker's once scheduled
		if q.scheduleRetry(job, p.backoff(n+1)) {
			q.log.Debug().Str("func", name).Str("id", id).Int("attempt", n).Msg("async invocation will be retried")
			return true
		}
	}
	if errors.Is(err, ErrClosed) {
		return false // the invoker is going away: nothing to keep
	}
	d := DeadLetter{ID: job.id, Function: job.name, Payload: job.payload, Attempts: job.attempts,
		Queued: job.queued, Failed: q.now()}
	if job.trace != nil {
		d.Caller = job.trace.Caller
	}
	if err != nil {
		d.Error = err.Error()
	} else {
		d.Error, d.FunctionError = string(res.Payload), true
	}
	q.dead.add(d)
	q.log.Info().Str("func", job.name).Str("id", job.id).Int("attempts", job.attempts).Str("error", d.Error).Msg("async invocation dead-lettered")
	return false
}

// scheduleRetry puts job back into the queue after wait; false when the
// queue is closing. A full queue delays the retry by another wait.
func (q *asyncQueue) scheduleRetry(job *asyncJob, wait time.Duration) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	if q.retrying == nil {
		q.retrying = map[*asyncJob]*time.Timer{}
	}
	q.retrying[job] = time.AfterFunc(wait, func() { q.requeue(job, wait) })
	return true
}

func (q *asyncQueue) requeue(job *asyncJob, wait time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.retrying[job]; !ok || q.closed {
		return // close took it
	}
	select {
	case q.jobs <- job:
		delete(q.retrying, job)
	default:
		q.retrying[job] = time.AfterFunc(max(wait, 10*time.Millisecond), func() { q.requeue(job, wait) })
	}
}

// stopRetries cancels the waiting retries when the queue closes; their
// events fail with ErrClosed.
func (q *asyncQueue) stopRetries() {
	q.mu.Lock()
	jobs := make([]*asyncJob, 0, len(q.retrying))
	for job, t := range q.retrying {
		t.Stop()
		jobs = append(jobs, job)
	}
	q.retrying = nil
	q.mu.Unlock()
	for _, job := range jobs {
		q.finish(job.id, nil, fmt.Errorf("invoker closed before a retry: %w", ErrClosed))
	}
}
