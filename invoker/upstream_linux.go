//go:build linux

package invoker

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// backupDoneTimeout bounds the marking of an event's backup copy as done.
const backupDoneTimeout = 10 * time.Second

// single reports whether the invoker has no upstream (NoUpstream).
func (iv *Invoker) single() bool {
	_, ok := iv.local.upstream.(NoUpstream)
	return ok
}

// passesOn says whether a call under ctx that this host cannot serve goes
// to the upstream: never for what the upstream delivered, else when there
// is one, and for calls between functions (tr set) always, so that their
// error says there is none.
func (iv *Invoker) passesOn(ctx context.Context, tr *Trace) bool {
	if isLocalOnly(ctx) {
		return false
	}
	return tr != nil || !iv.single()
}

// InvokeAsync implements Service: the call is queued in memory and run by
// a background worker, with a backup copy upstream if there is an
// upstream; ErrOverloaded when the queue is full and no other host takes
// the event. A function not deployed here goes to the upstream.
func (iv *Invoker) InvokeAsync(ctx context.Context, name string, payload []byte, o InvokeOptions) (string, error) {
	return iv.queueEvent(ctx, name, payload, o, nil)
}

// queueEvent queues an event for name (tr: the sending function's trace,
// or nil): into the local asynchronous queue when name is deployed here,
// its copy kept upstream until its outcome is final; to the upstream when
// it is not, or when the local queue is full.
func (iv *Invoker) queueEvent(ctx context.Context, name string, payload []byte, o InvokeOptions, tr *Trace) (string, error) {
	if len(payload) > MaxPayloadBytes {
		return "", fmt.Errorf("invoke %q: %w: payload of %d bytes, the limit is %d", name, ErrTooLarge, len(payload), MaxPayloadBytes)
	}
	ev, err := newEvent(name, payload, o, tr)
	if err != nil {
		return "", err
	}
	id := ev.ID
	up := iv.local.upstream
	if _, ok := iv.reg.current(name); !ok {
		if !iv.passesOn(ctx, tr) {
			_, err := iv.reg.Get(name)
			return "", err
		}
		if err := up.InvokeAsync(ctx, ev); err != nil {
			return "", fmt.Errorf("invoke %q: %w", name, err)
		}
		iv.async.handedOn(id, name, "not deployed here")
		return id, nil
	}
	// The backup is stored while the event already runs (as in SAND, where
	// the host agent publishes it beside the local queue); the caller
	// gets its id once the upstream has it, so an accepted event outlives
	// this host, unless storing the copy failed (the upstream is down,
	// the payload is over its size limit): that is logged, and the event
	// runs here without one.
	stored := make(chan struct{})
	var bk Backup
	backup := func() {
		defer close(stored)
		var err error
		if bk, err = up.Backup(ctx, ev); err != nil {
			iv.log.Warn().Err(err).Str("func", name).Str("id", id).
				Msg("no backup copy upstream: the event is lost if this host dies before it ran")
			bk = nil
		}
	}
	if iv.single() {
		backup()
	} else {
		go backup()
	}
	done := func(err error) {
		<-stored
		if bk == nil || errors.Is(err, ErrClosed) {
			return // unfinished: the copy stays for another host
		}
		ctx, cancel := context.WithTimeout(context.Background(), backupDoneTimeout)
		defer cancel()
		if err := bk.Done(ctx); err != nil {
			iv.log.Warn().Err(err).Str("func", name).Str("id", id).
				Msg("backup copy not marked done: another host may run the event again")
		}
	}
	err = iv.async.enqueue(ev, o.Timeout, false, done)
	if errors.Is(err, ErrOverloaded) && !iv.single() {
		// This host has no room: the hosts that serve name take it (this
		// one too, once it has room again).
		if uerr := up.InvokeAsync(ctx, ev); uerr == nil {
			done(nil)
			iv.async.handedOn(id, name, "no room here")
			return id, nil
		}
	}
	if err != nil {
		done(nil)
		return "", fmt.Errorf("invoke %q: %w", name, err)
	}
	<-stored
	return id, nil
}

// servedChanged tells the upstream, if it wants to know, that the
// functions served here changed.
func (iv *Invoker) servedChanged(ctx context.Context) {
	n, ok := iv.local.upstream.(ServedNotifier)
	if !ok {
		return
	}
	if err := n.ServedChanged(ctx); err != nil {
		iv.log.Warn().Err(err).Msg("tell the upstream which functions this host serves")
	}
}

// host is the invoker as its upstream sees it.
type host struct{ iv *Invoker }

var _ Host = host{}

// Served implements Host.
func (h host) Served() []string { return h.iv.reg.names() }

// Run implements Host.
func (h host) Run(ctx context.Context, name string, payload []byte, tr *Trace) (*Result, error) {
	ctx = withLocalOnly(ctx)
	if tr != nil {
		if err := h.checkTrace(tr); err != nil {
			return nil, fmt.Errorf("invoke %q: %w", name, err)
		}
		ctx = withTrace(ctx, tr)
	}
	return h.iv.Invoke(ctx, name, payload, InvokeOptions{})
}

// Enqueue implements Host.
func (h host) Enqueue(ev Event, done func(error)) error {
	if ev.ID == "" {
		return fmt.Errorf("event without an id: %w", ErrInvalid)
	}
	if len(ev.Payload) > MaxPayloadBytes {
		return fmt.Errorf("invoke %q: %w: payload of %d bytes, the limit is %d", ev.Function, ErrTooLarge, len(ev.Payload), MaxPayloadBytes)
	}
	if ev.Trace != nil {
		if err := h.checkTrace(ev.Trace); err != nil {
			return fmt.Errorf("invoke %q: %w", ev.Function, err)
		}
	}
	if _, ok := h.iv.reg.current(ev.Function); !ok {
		return fmt.Errorf("function %q is not deployed on this host: %w", ev.Function, ErrNotFound)
	}
	return h.iv.async.enqueue(ev, 0, true, done)
}

// Workers implements Host.
func (h host) Workers() int { return max(h.iv.cfg.asyncWorkers, 1) }

// checkTrace applies this host's limit to a trace from another host: a
// chain between hosts is bounded as one on a single host.
func (h host) checkTrace(tr *Trace) error {
	if max := h.iv.local.maxDepth; tr.Depth > max {
		return fmt.Errorf("%w: %s is %d calls deep, the limit is %d", ErrCallDepth, tr, tr.Depth, max)
	}
	return nil
}
