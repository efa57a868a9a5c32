package natsgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sockfaas/sockfaas/invoker"
)

// serving is what Attach starts and Detach stops: the heartbeat, the
// subscriptions and event consumers of the functions this host serves, the
// events in flight, the takeovers of dead hosts' backups.
type serving struct {
	h       invoker.Host
	ctx     context.Context // cancelled by Detach
	cancel  context.CancelFunc
	started time.Time
	wg      sync.WaitGroup // every goroutine below
	calls   sync.WaitGroup // sync calls being served

	direct *nats.Subscription // this host's own call subject
	syncMu sync.Mutex         // one sync at a time

	mu        sync.Mutex
	stopping  bool // set by stop: no new call is served
	functions map[string]*function
	slots     chan struct{}   // events this host may take more
	takeovers map[string]bool // dead hosts whose backups are being moved
}

// function is what this host runs for one function it serves.
type function struct {
	name   string
	sub    *nats.Subscription // the queue group of its call subject
	cancel context.CancelFunc // its event fetch loop
	done   chan struct{}
}

// Attach implements invoker.Upstream. It first moves the backups a
// previous run under the same host ID left (they cannot be running any
// more), then says this host is alive, subscribes to the calls and events
// of the functions h serves, and keeps all of it current every Heartbeat.
func (g *Gateway) Attach(ctx context.Context, h invoker.Host) error {
	g.mu.Lock()
	switch {
	case g.closed:
		g.mu.Unlock()
		return fmt.Errorf("natsgw: attach: %w", invoker.ErrClosed)
	case g.serving != nil:
		g.mu.Unlock()
		return fmt.Errorf("natsgw: attach: %w: already attached", invoker.ErrInvalid)
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &serving{
		h: h, ctx: sctx, cancel: cancel, started: time.Now(),
		functions: map[string]*function{},
		slots:     make(chan struct{}, min(g.cfg.MaxEvents, 2*max(h.Workers(), 1))), takeovers: map[string]bool{},
	}
	g.serving = s
	g.mu.Unlock()

	if err := g.claimID(ctx); err != nil {
		g.abortAttach(s)
		return err
	}
	if err := g.moveBackups(ctx, g.cfg.HostID); err != nil {
		g.abortAttach(s)
		return fmt.Errorf("natsgw: take over this host's earlier backups: %w", err)
	}
	if err := g.heartbeat(ctx, s); err != nil {
		g.abortAttach(s)
		return fmt.Errorf("natsgw: join: %w", err)
	}
	direct, err := g.nc.Subscribe(g.hostCallPrefix+"*", func(m *nats.Msg) {
		g.serveCall(s, strings.TrimPrefix(m.Subject, g.hostCallPrefix), m)
	})
	if err != nil {
		g.abortAttach(s)
		return fmt.Errorf("natsgw: subscribe: %w", err)
	}
	s.mu.Lock()
	s.direct = direct
	s.mu.Unlock()
	if err := g.sync(ctx, s); err != nil {
		g.abortAttach(s)
		return err
	}
	// The subscriptions are the server's before Attach returns.
	if err := g.nc.FlushTimeout(g.cfg.PublishTimeout); err != nil {
		g.abortAttach(s)
		return fmt.Errorf("natsgw: subscribe: %w", err)
	}
	s.wg.Add(1)
	go g.loop(s)
	return nil
}

// claimID refuses a host ID that a live host uses: two hosts with one ID
// would share its call subject and take each other's backups for orphans.
func (g *Gateway) claimID(ctx context.Context) error {
	e, err := g.hosts.Get(ctx, g.cfg.HostID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return nil
	case err != nil:
		return fmt.Errorf("natsgw: read the live hosts: %w", err)
	}
	var p peer
	if json.Unmarshal(e.Value(), &p) == nil && p.Instance == g.instance {
		return nil
	}
	return fmt.Errorf("natsgw: %w: %q belongs to a live host (last heartbeat %v ago); give this host another id, or wait %v if that host is gone",
		ErrHostIDInUse, g.cfg.HostID, time.Since(e.Created()).Round(time.Millisecond), g.cfg.HostTTL)
}

// abortAttach undoes a failed Attach.
func (g *Gateway) abortAttach(s *serving) {
	_ = g.stop(context.Background(), s)
	g.mu.Lock()
	g.serving = nil
	g.mu.Unlock()
}

// Detach implements invoker.Upstream: it unsubscribes and stops taking
// events; events already taken are acknowledged as they finish (or handed
// back, if the invoker stops first), calls being served are answered.
func (g *Gateway) Detach(ctx context.Context) error {
	g.mu.Lock()
	s := g.serving
	g.serving = nil
	g.mu.Unlock()
	if s == nil {
		return nil
	}
	return g.stop(ctx, s)
}

func (g *Gateway) stop(ctx context.Context, s *serving) error {
	s.cancel()
	var errs []error
	s.mu.Lock()
	s.stopping = true
	direct := s.direct
	s.mu.Unlock()
	if direct != nil {
		if err := direct.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, err)
		}
	}
	s.syncMu.Lock() // no sync adds a function after this
	s.mu.Lock()
	fns := make([]*function, 0, len(s.functions))
	for _, f := range s.functions {
		fns = append(fns, f)
	}
	s.mu.Unlock()
	for _, f := range fns {
		if err := g.unserve(s, f); err != nil {
			errs = append(errs, err)
		}
	}
	s.syncMu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); s.calls.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("natsgw: wait for the calls being served: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

// loop keeps the host's presence, subscriptions and takeovers current.
func (g *Gateway) loop(s *serving) {
	defer s.wg.Done()
	beat := time.NewTicker(g.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-beat.C:
			ctx, cancel := context.WithTimeout(s.ctx, g.cfg.HostTTL)
			g.beat(ctx, s)
			cancel()
		}
	}
}

// beat is one round of loop's upkeep.
func (g *Gateway) beat(ctx context.Context, s *serving) {
	if !g.nc.IsConnected() {
		return // nothing to do until the client has reconnected
	}
	warn := func(err error, what string) {
		if err != nil && s.ctx.Err() == nil {
			g.log.Warn().Err(err).Msg(what)
		}
	}
	err := g.heartbeat(ctx, s)
	if g.reconnected.Swap(false) || err != nil {
		// A server that restarted without its store, or an operator,
		// may have removed what the hosts share: the fetch loops
		// recreate their consumers when they find them gone.
		ectx, cancel := context.WithTimeout(s.ctx, g.cfg.PublishTimeout)
		eerr := g.ensure(ectx)
		cancel()
		warn(eerr, "recreate the streams and bucket the hosts share")
		if eerr == nil && err != nil {
			err = g.heartbeat(ctx, s)
		}
	}
	warn(err, "heartbeat")
	warn(g.sync(ctx, s), "subscriptions")
	warn(g.takeOver(ctx, s), "look for dead hosts' backups")
}

// heartbeat says this host is alive and which functions it serves, and
// reads which other hosts are.
func (g *Gateway) heartbeat(ctx context.Context, s *serving) error {
	fns := s.h.Served()
	slices.Sort(fns)
	v, err := json.Marshal(peer{Functions: fns, Started: s.started, Instance: g.instance})
	if err != nil {
		return err
	}
	if _, err := g.hosts.Put(ctx, g.cfg.HostID, v); err != nil {
		return err
	}
	return g.refreshPeers(ctx)
}

// refreshPeers reads the live hosts from the bucket.
func (g *Gateway) refreshPeers(ctx context.Context) error {
	lister, err := g.hosts.ListKeys(ctx)
	if err != nil {
		return err
	}
	peers := map[string]peer{}
	for key := range lister.Keys() {
		e, err := g.hosts.Get(ctx, key)
		if err != nil {
			continue // expired meanwhile
		}
		var p peer
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			g.log.Debug().Err(err).Str("peer", key).Msg("unreadable heartbeat")
			continue
		}
		peers[key] = p
	}
	g.mu.Lock()
	g.peers = peers
	g.mu.Unlock()
	return nil
}

// ServedChanged implements invoker.ServedNotifier: it subscribes to the
// functions the host serves now (and leaves those it no longer does) and
// tells the other hosts, before it returns.
func (g *Gateway) ServedChanged(ctx context.Context) error {
	g.mu.Lock()
	s := g.serving
	g.mu.Unlock()
	if s == nil {
		return nil
	}
	if err := g.sync(ctx, s); err != nil {
		return err
	}
	if err := g.nc.FlushTimeout(g.cfg.PublishTimeout); err != nil {
		return fmt.Errorf("natsgw: subscribe: %w", err)
	}
	return g.heartbeat(ctx, s)
}

// sync subscribes to the functions h serves now and unsubscribes from
// those it no longer does.
func (g *Gateway) sync(ctx context.Context, s *serving) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.ctx.Err() != nil {
		return nil // detached
	}
	want := map[string]bool{}
	for _, name := range s.h.Served() {
		if ValidToken(name) {
			want[name] = true
		}
	}
	s.mu.Lock()
	var add []string
	var drop []*function
	for name := range want {
		if s.functions[name] == nil {
			add = append(add, name)
		}
	}
	for name, f := range s.functions {
		if !want[name] {
			drop = append(drop, f)
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, f := range drop {
		if err := g.unserve(s, f); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range add {
		if err := g.serve(ctx, s, name); err != nil {
			errs = append(errs, fmt.Errorf("natsgw: serve %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// serve joins name's call queue group and starts taking its events.
func (g *Gateway) serve(ctx context.Context, s *serving, name string) error {
	cons, err := g.consumer(ctx, name)
	if err != nil {
		return err
	}
	sub, err := g.nc.QueueSubscribe(g.callPrefix+name, g.callPrefix+name, func(m *nats.Msg) { g.serveCall(s, name, m) })
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancel(s.ctx)
	f := &function{name: name, sub: sub, cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	s.functions[name] = f
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(f.done)
		g.fetchEvents(fctx, s, name, cons)
	}()
	g.log.Debug().Str("func", name).Msg("serving upstream calls and events")
	return nil
}

// consumer creates (or finds, or updates) name's durable event consumer,
// the one the hosts that serve name share.
func (g *Gateway) consumer(ctx context.Context, name string) (jetstream.Consumer, error) {
	cons, err := g.events.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:           name,
		Description:       "sockfaas: the hosts that serve " + name,
		FilterSubject:     g.eventPrefix + name,
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           g.cfg.AckWait,
		MaxDeliver:        g.cfg.MaxDeliver,
		MaxAckPending:     -1,
		InactiveThreshold: g.cfg.Retention,
	})
	if err != nil {
		return nil, fmt.Errorf("event consumer of %q: %w", name, err)
	}
	return cons, nil
}

// unserve leaves name's queue group and stops taking its events.
func (g *Gateway) unserve(s *serving, f *function) error {
	s.mu.Lock()
	delete(s.functions, f.name)
	s.mu.Unlock()
	f.cancel()
	err := f.sub.Unsubscribe()
	<-f.done
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		err = nil
	}
	return err
}

// serveCall answers one call, in a goroutine of its own: a subscription
// hands messages over one at a time.
func (g *Gateway) serveCall(s *serving, name string, m *nats.Msg) {
	s.mu.Lock()
	if s.stopping { // a message the client still hands over after stop
		s.mu.Unlock()
		reply := nats.NewMsg(m.Reply)
		reply.Header.Set(hdrHost, g.cfg.HostID)
		putError(reply, fmt.Errorf("%w: host %s is stopping", invoker.ErrUnavailable, g.cfg.HostID))
		if m.Reply != "" {
			_ = m.RespondMsg(reply)
		}
		return
	}
	s.calls.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.calls.Done()
		reply := nats.NewMsg(m.Reply)
		reply.Header.Set(hdrHost, g.cfg.HostID)
		res, err := g.runCall(s, name, m)
		if err == nil && int64(len(res.Payload)) > g.nc.MaxPayload()-headerReserve {
			err = fmt.Errorf("%w: the result of %q is %d bytes, NATS takes at most %d (max_payload)", invoker.ErrTooLarge, name, len(res.Payload), g.nc.MaxPayload()-headerReserve)
		}
		if err != nil {
			putError(reply, err)
		} else {
			putResult(reply, res)
		}
		if m.Reply == "" {
			return // nobody waits
		}
		if err := m.RespondMsg(reply); err != nil {
			g.log.Warn().Err(err).Str("func", name).Msg("answer an upstream call")
		}
	}()
}

func (g *Gateway) runCall(s *serving, name string, m *nats.Msg) (*invoker.Result, error) {
	if err := invoker.ValidateName(name); err != nil {
		return nil, err
	}
	tr, err := getTrace(m.Header)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.CallTimeout)
	defer cancel()
	return s.h.Run(ctx, name, m.Data, tr)
}

// fetchEvents takes name's events while there is room for them, and hands
// each to the invoker; it is acknowledged when its outcome is final. An
// idle loop holds one slot and asks again every second, so that a host
// serving many functions does not tie up its slots in idle pulls.
func (g *Gateway) fetchEvents(ctx context.Context, s *serving, name string, cons jetstream.Consumer) {
	const busyWait, idleWait = 5 * time.Second, time.Second
	idle := true // until a fetch brings something
	for ctx.Err() == nil {
		// Take one slot before asking, so nothing is fetched that cannot
		// run; when busy, as many more as are free, up to a batch.
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n, wait := 1, idleWait
	more:
		for !idle && n < 16 {
			select {
			case s.slots <- struct{}{}:
				n++
				wait = busyWait
			default:
				break more
			}
		}
		fctx, cancel := context.WithTimeout(ctx, wait)
		batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			g.releaseSlots(s, n)
			cons = g.refetch(ctx, name, cons, err)
			continue
		}
		got, overloaded := 0, false
		for m := range batch.Messages() {
			got++
			if ctx.Err() != nil {
				_ = m.Nak() // stopped meanwhile: to another host at once
				g.releaseSlots(s, 1)
				continue
			}
			if g.deliver(s, name, m) {
				overloaded = true
			}
		}
		cancel()
		g.releaseSlots(s, n-got)
		idle = got == 0
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			cons = g.refetch(ctx, name, cons, err)
		}
		if overloaded {
			// The local queue is full (of this host's own events): leave
			// the next events to hosts with room for a while.
			sleep(ctx, time.Second)
		}
	}
}

// refetch is what a fetch loop does after a failed fetch: wait a little,
// and make sure the consumer exists (a NATS server that lost its store,
// or an operator, may have removed it).
func (g *Gateway) refetch(ctx context.Context, name string, cons jetstream.Consumer, err error) jetstream.Consumer {
	if ctx.Err() != nil {
		return cons
	}
	g.log.Debug().Err(err).Str("func", name).Msg("fetch events")
	sleep(ctx, 250*time.Millisecond)
	if !g.nc.IsConnected() {
		return cons
	}
	cctx, cancel := context.WithTimeout(ctx, g.cfg.PublishTimeout)
	defer cancel()
	fresh, cerr := g.consumer(cctx, name)
	if cerr != nil {
		if ctx.Err() == nil {
			g.log.Warn().Err(cerr).Str("func", name).Msg("events cannot be taken")
		}
		return cons
	}
	return fresh
}

// deliver hands one delivered event to the invoker; it holds one slot,
// given back when the event is acknowledged or handed back. It reports
// whether the invoker had no room for it.
func (g *Gateway) deliver(s *serving, name string, m jetstream.Msg) (overloaded bool) {
	ev, err := getEvent(name, m.Headers(), m.Data())
	if err != nil {
		g.log.Warn().Err(err).Str("func", name).Msg("dropping a malformed event")
		_ = m.TermWithReason(err.Error())
		g.releaseSlots(s, 1)
		return false
	}
	g.inflightMu.Lock()
	g.inflight[m] = struct{}{}
	g.inflightMu.Unlock()
	finish := func(ack func() error) {
		g.inflightMu.Lock()
		delete(g.inflight, m)
		g.inflightMu.Unlock()
		if err := ack(); err != nil {
			g.log.Warn().Err(err).Str("func", name).Str("id", ev.ID).Msg("acknowledge an event")
		}
		g.releaseSlots(s, 1)
	}
	err = s.h.Enqueue(ev, func(err error) {
		if errors.Is(err, invoker.ErrClosed) {
			finish(m.Nak) // this host stopped before it was done: another one runs it
			return
		}
		finish(m.Ack)
	})
	switch {
	case err == nil:
	case errors.Is(err, invoker.ErrOverloaded):
		finish(func() error { return m.NakWithDelay(time.Second) })
		return true
	case errors.Is(err, invoker.ErrClosed):
		finish(func() error { return m.NakWithDelay(time.Second) })
	case errors.Is(err, invoker.ErrNotFound):
		// Removed here meanwhile: another host may serve it.
		finish(func() error { return m.NakWithDelay(g.cfg.Heartbeat) })
	default: // invalid, too large: no host will do better
		g.log.Warn().Err(err).Str("func", name).Str("id", ev.ID).Msg("dropping an event no host can run")
		finish(func() error { return m.TermWithReason(err.Error()) })
	}
	return false
}

func (g *Gateway) releaseSlots(s *serving, n int) {
	for range n {
		<-s.slots
	}
}

// takeOver moves the backups of hosts that are no longer alive to the
// events stream, where the hosts that serve their functions take them.
func (g *Gateway) takeOver(ctx context.Context, s *serving) error {
	// After an outage every host's heartbeat has lapsed: wait until the
	// others have had the time to beat again before taking any for dead.
	if since := time.Since(time.Unix(0, g.connectedAt.Load())); since < g.cfg.HostTTL+g.cfg.Heartbeat {
		return nil
	}
	info, err := g.backups.Info(ctx, jetstream.WithSubjectFilter(g.backupPrefix+">"))
	if err != nil {
		return err
	}
	g.mu.Lock()
	peers := g.peers
	g.mu.Unlock()
	dead := map[string]bool{}
	for subj := range info.State.Subjects {
		host, _, ok := strings.Cut(strings.TrimPrefix(subj, g.backupPrefix), ".")
		if _, alive := peers[host]; ok && !alive && host != g.cfg.HostID {
			dead[host] = true
		}
	}
	for host := range dead {
		s.mu.Lock()
		busy := s.takeovers[host]
		s.takeovers[host] = true
		s.mu.Unlock()
		if busy {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.takeovers, host)
				s.mu.Unlock()
			}()
			// It may have joined after the list of live hosts was read;
			// and a failed lookup proves nothing.
			if _, err := g.hosts.Get(s.ctx, host); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
				return
			}
			if err := g.moveBackups(s.ctx, host); err != nil && s.ctx.Err() == nil {
				g.log.Warn().Err(err).Str("dead", host).Msg("take over a dead host's events")
			}
		}()
	}
	return nil
}

// moveBackups moves every backup of host to the events stream: each is
// stored there under its event's ID (so two hosts moving the same one
// store it once), then deleted from the backups.
func (g *Gateway) moveBackups(ctx context.Context, host string) error {
	filter := g.backupPrefix + host + ".*"
	moved := 0
	for seq := uint64(1); ; {
		raw, err := g.backups.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return err
		}
		seq = raw.Sequence + 1
		fn := raw.Subject[strings.LastIndexByte(raw.Subject, '.')+1:]
		msg := nats.NewMsg(g.eventPrefix + fn)
		for k, v := range raw.Header { // the event's, not the stream's
			if strings.HasPrefix(k, "Sockfaas-") || k == nats.MsgIdHdr {
				msg.Header[k] = v
			}
		}
		msg.Header.Set(hdrTakenFrom, host)
		msg.Data = raw.Data
		if _, err := g.publish(ctx, msg); err != nil {
			return fmt.Errorf("move event %s of %s: %w", raw.Header.Get(hdrEventID), fn, err)
		}
		if err := g.backups.DeleteMsg(ctx, raw.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("delete moved backup %d: %w", raw.Sequence, err)
		}
		moved++
	}
	if moved > 0 {
		g.log.Info().Str("dead", host).Int("events", moved).Msg("took over the unfinished events of a host that is gone")
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
