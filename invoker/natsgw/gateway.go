package natsgw

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/invoker"
)

// Defaults of Config.
const (
	DefaultPrefix = "sockfaas"
	// DefaultHeartbeat is how often a host says it is alive (and which
	// functions it serves), and looks for dead hosts' backups.
	DefaultHeartbeat = time.Second
	// DefaultHostTTL is how long a host that stopped saying it is alive
	// counts as alive: after it, other hosts run its unfinished events.
	DefaultHostTTL = 5 * time.Second
	// DefaultAckWait is how long an event delivered to a host may go
	// without a sign of progress before it is delivered again (the host
	// sends one every third of it while the event runs).
	DefaultAckWait = 30 * time.Second
	// DefaultCallTimeout bounds a synchronous call that carries no
	// deadline: AWS Lambda's longest timeout, and a minute to spare.
	DefaultCallTimeout = 16 * time.Minute
	// DefaultPublishTimeout bounds the storing of an event or a backup.
	DefaultPublishTimeout = 5 * time.Second
	// DefaultMaxEvents bounds how many delivered events a host holds at
	// once (running or waiting in its queue); a host takes no more than
	// twice its async workers (invoker.Host.Workers) either.
	DefaultMaxEvents = 64
	// DefaultMaxDeliver is how many times the same event may be
	// delivered (to any host) before JetStream gives it up: -1, no limit.
	// A host retries an event itself (the invoker's retry policy) and
	// acknowledges it once its outcome is final, dead letter or not, so
	// deliveries beyond the first only come from hosts that died, stopped
	// or had no room; a limit would lose events under a long overload.
	DefaultMaxDeliver = -1
	// DefaultRetention is how long an event waits for a host that serves
	// its function, and how long a backup copy is kept at most.
	DefaultRetention = 24 * time.Hour
)

// Config configures a Gateway.
type Config struct {
	// URL names the NATS servers, comma-separated (nats://host:port).
	// Ignored when Conn is set.
	URL string
	// Conn is a connection to use as is; the Gateway does not close it.
	// It should reconnect forever (nats.MaxReconnects(-1)). The Gateway
	// cannot install its handlers on it: sync calls in flight when it
	// disconnects then fail at their deadline rather than at once.
	Conn *nats.Conn
	// Options are added to the connection's options when the Gateway
	// connects itself (credentials, TLS, ...).
	Options []nats.Option
	// Prefix starts every subject, stream and bucket name: hosts with the
	// same prefix form one cluster. Default DefaultPrefix.
	Prefix string
	// HostID names this host among the others: letters, digits, - and _.
	// Default: the host name and a random suffix, new for every run.
	HostID string
	Logger zerolog.Logger

	Heartbeat      time.Duration // default DefaultHeartbeat
	HostTTL        time.Duration // default DefaultHostTTL
	AckWait        time.Duration // default DefaultAckWait
	CallTimeout    time.Duration // default DefaultCallTimeout
	PublishTimeout time.Duration // default DefaultPublishTimeout
	MaxEvents      int           // default DefaultMaxEvents
	MaxDeliver     int           // default DefaultMaxDeliver
	Retention      time.Duration // default DefaultRetention
	// Storage of the streams; default file. Memory storage loses queued
	// events when the NATS server restarts.
	Storage jetstream.StorageType
	// Replicas of the streams in a clustered JetStream; default 1.
	Replicas int
}

func (c *Config) setDefaults() error {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.HostID == "" {
		c.HostID = defaultHostID()
	}
	durations := []struct {
		d   *time.Duration
		def time.Duration
	}{
		{&c.Heartbeat, DefaultHeartbeat}, {&c.HostTTL, DefaultHostTTL}, {&c.AckWait, DefaultAckWait},
		{&c.CallTimeout, DefaultCallTimeout}, {&c.PublishTimeout, DefaultPublishTimeout}, {&c.Retention, DefaultRetention},
	}
	for _, d := range durations {
		if *d.d == 0 {
			*d.d = d.def
		}
		if *d.d < 0 {
			return fmt.Errorf("%w: negative duration %v", invoker.ErrInvalid, *d.d)
		}
	}
	if c.MaxEvents == 0 {
		c.MaxEvents = DefaultMaxEvents
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	switch {
	case !ValidToken(c.Prefix):
		return fmt.Errorf("%w: prefix %q: want letters, digits, - and _", invoker.ErrInvalid, c.Prefix)
	case !ValidToken(c.HostID):
		return fmt.Errorf("%w: host id %q: want 1-64 letters, digits, - and _", invoker.ErrInvalid, c.HostID)
	case c.HostTTL < 2*c.Heartbeat:
		return fmt.Errorf("%w: host TTL %v is less than two heartbeats (%v)", invoker.ErrInvalid, c.HostTTL, c.Heartbeat)
	case c.MaxEvents < 1 || c.Replicas < 1 || c.MaxDeliver < 1 && c.MaxDeliver != -1:
		return fmt.Errorf("%w: MaxEvents and Replicas must be positive, MaxDeliver positive or -1", invoker.ErrInvalid)
	case c.Conn == nil && c.URL == "":
		return fmt.Errorf("%w: no NATS URL", invoker.ErrInvalid)
	}
	return nil
}

// Redact hides the passwords and tokens of a comma-separated list of NATS
// URLs, for logs and messages.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); ok {
			parts[i] = u.Redacted()
		} else {
			u.User = url.User("xxxxx") // nats://TOKEN@host
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// RedactError is err with the secrets of urls hidden from its message (the
// NATS client's errors name the URL as given); errors.Is and As still see
// err. A nil err stays nil.
func RedactError(err error, urls string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, p := range strings.Split(urls, ",") {
		p = strings.TrimSpace(p)
		if safe := Redact(p); safe != p {
			msg = strings.ReplaceAll(msg, p, safe)
		}
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{err: err, msg: msg}
}

type redactedError struct {
	err error
	msg string
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// defaultHostID is the host name, made a subject token, and a random
// suffix.
func defaultHostID() string {
	name, _ := os.Hostname()
	name = strings.Map(func(r rune) rune {
		if ValidToken(string(r)) {
			return r
		}
		return '-'
	}, name)
	if len(name) > 40 {
		name = name[:40]
	}
	if name == "" {
		name = "host"
	}
	return name + "-" + randomHex(4)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// ErrHostIDInUse is wrapped by Attach's error when a live host already
// uses the configured HostID.
var ErrHostIDInUse = errors.New("host id in use")

// Gateway is an invoker.Upstream over NATS. See the package documentation.
// Its methods are safe for concurrent use.
type Gateway struct {
	cfg     Config
	log     zerolog.Logger
	nc      *nats.Conn
	ownConn bool
	js      jetstream.JetStream
	events  jetstream.Stream
	backups jetstream.Stream
	hosts   jetstream.KeyValue

	// subjects
	callPrefix, hostCallPrefix, eventPrefix, backupPrefix string
	// reconnected is set by a reconnect: the next heartbeat ensures the
	// streams exist. connectedAt is when the connection last came up
	// (Unix nanoseconds).
	reconnected atomic.Bool
	connectedAt atomic.Int64
	// backupsCreated is when the backups stream was created (Unix
	// nanoseconds): a deletion by sequence number is only right in the
	// stream the number came from.
	backupsCreated atomic.Int64

	// inflight are the events delivered to this host and not yet
	// acknowledged; progress tells the server they are, until Close
	// (Detach does not stop them running).
	inflightMu   sync.Mutex
	inflight     map[jetstream.Msg]struct{}
	stopProgress chan struct{}
	progressDone chan struct{}

	// deletes queues the sequence numbers of finished events' backups
	// for deleteBackups; deleted is closed when it has stopped.
	deletes   chan backupRef
	deleted   chan struct{}
	delMu     sync.Mutex
	delClosed bool

	instance string // random, this process's

	mu      sync.Mutex
	closed  bool
	calls   map[*callState]struct{} // sync calls in flight
	peers   map[string]peer         // other hosts, from the last heartbeat
	serving *serving                // between Attach and Detach
}

// peer is another host as its heartbeat describes it.
type peer struct {
	Functions []string  `json:"functions"`
	Started   time.Time `json:"started"`
	// Instance tells two processes with the same host ID apart.
	Instance string `json:"instance"`
}

// callState is a sync call in flight: a lost connection fails it.
type callState struct{ cancel context.CancelCauseFunc }

// errConnLost is the cause given to the calls in flight when the
// connection drops: their replies may never come.
var errConnLost = errors.New("the connection to NATS was lost while the call was in flight; the callee may or may not have run")

var _ invoker.Upstream = (*Gateway)(nil)

// New connects to NATS (unless cfg.Conn is given), and creates the streams
// and the bucket the hosts share if they do not exist yet. The Gateway
// delivers nothing until an invoker attaches it (invoker.WithUpstream).
func New(ctx context.Context, cfg Config) (_ *Gateway, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("natsgw: %w", err)
	}
	p := cfg.Prefix
	g := &Gateway{
		cfg: cfg, log: cfg.Logger.With().Str("host", cfg.HostID).Logger(), nc: cfg.Conn,
		callPrefix: p + ".call.", hostCallPrefix: p + ".host." + cfg.HostID + ".call.",
		eventPrefix: p + ".event.", backupPrefix: p + ".backup.",
		calls: map[*callState]struct{}{}, peers: map[string]peer{}, instance: randomHex(8),
	}
	if g.nc == nil {
		opts := append([]nats.Option{
			nats.Name("sockfaas " + cfg.HostID),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(250 * time.Millisecond),
			nats.RetryOnFailedConnect(false),
		}, cfg.Options...)
		opts = append(opts,
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { g.disconnected(err) }),
			nats.ReconnectHandler(func(nc *nats.Conn) {
				g.connectedAt.Store(time.Now().UnixNano())
				g.reconnected.Store(true)
				g.log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
			}),
		)
		if g.nc, err = nats.Connect(cfg.URL, opts...); err != nil {
			return nil, fmt.Errorf("natsgw: connect to %s: %w: %w", Redact(cfg.URL), invoker.ErrUnavailable, RedactError(err, cfg.URL))
		}
		g.ownConn = true
		defer func() {
			if err != nil {
				g.mu.Lock()
				g.closed = true // no "disconnected" warning
				g.mu.Unlock()
				g.nc.Close()
			}
		}()
	}
	g.connectedAt.Store(time.Now().UnixNano())
	if g.js, err = jetstream.New(g.nc); err != nil {
		return nil, fmt.Errorf("natsgw: %w", err)
	}
	if err := g.ensure(ctx); err != nil {
		return nil, err
	}
	g.deletes, g.deleted = make(chan backupRef, 4096), make(chan struct{})
	go g.deleteBackups()
	g.inflight = map[jetstream.Msg]struct{}{}
	g.stopProgress, g.progressDone = make(chan struct{}), make(chan struct{})
	go g.progress()
	g.log.Info().Str("server", g.nc.ConnectedUrlRedacted()).Str("prefix", p).Msg("NATS gateway ready")
	return g, nil
}

// ensure creates the streams and the bucket the hosts share, or updates
// them to this host's configuration. It runs again after a reconnect: a
// NATS server that restarted without its store has lost them.
func (g *Gateway) ensure(ctx context.Context) (err error) {
	cfg := g.cfg
	p := cfg.Prefix
	maxMsg := int32(min(g.nc.MaxPayload(), 1<<30))
	events, err := g.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        p + "_events", // Unfinished names them too
		Description: "sockfaas: asynchronous invocations waiting for a host that serves their function",
		Subjects:    []string{g.eventPrefix + "*"},
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardNew, // a full stream refuses, never drops
		MaxAge:      cfg.Retention,
		Duplicates:  10 * time.Minute,
		MaxMsgSize:  maxMsg,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("natsgw: events stream: %w", err)
	}
	backups, err := g.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        p + "_backups",
		Description: "sockfaas: copies of the asynchronous invocations hosts run themselves, until they are done",
		Subjects:    []string{g.backupPrefix + "*.*"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxAge:      cfg.Retention,
		Duplicates:  10 * time.Minute,
		MaxMsgSize:  maxMsg,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
		AllowDirect: true,
	})
	if err != nil {
		return fmt.Errorf("natsgw: backups stream: %w", err)
	}
	hosts, err := g.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      p + "_hosts",
		Description: "sockfaas: the live hosts and the functions they serve",
		TTL:         cfg.HostTTL,
		Storage:     cfg.Storage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("natsgw: hosts bucket: %w", err)
	}
	if g.events == nil { // New: the handles name the streams, they stay good
		g.events, g.backups, g.hosts = events, backups, hosts
	}
	g.backupsCreated.Store(backups.CachedInfo().Created.UnixNano())
	return nil
}

// Unfinished counts the events the hosts of prefix's cluster have not
// finished, as the server behind nc stores them: those waiting for a host,
// being run, or backed up by the host running them.
func Unfinished(ctx context.Context, nc *nats.Conn, prefix string) (uint64, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, name := range []string{prefix + "_events", prefix + "_backups"} {
		st, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return n, err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return n, err
		}
		n += info.State.Msgs
	}
	return n, nil
}

// HostID is this host's name among the others.
func (g *Gateway) HostID() string { return g.cfg.HostID }

// Conn is the gateway's NATS connection.
func (g *Gateway) Conn() *nats.Conn { return g.nc }

// Close stops the gateway: it detaches (if the invoker has not), removes
// this host from the live ones, so that the others take its unfinished
// events at once, and closes the connection if it opened it. Call it after
// the invoker's Close.
func (g *Gateway) Close(ctx context.Context) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	errs := []error{g.Detach(ctx)}
	g.delMu.Lock()
	g.delClosed = true
	close(g.deletes)
	g.delMu.Unlock()
	select {
	case <-g.deleted:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("natsgw: wait for backup deletions: %w", ctx.Err()))
	}
	close(g.stopProgress)
	<-g.progressDone
	if g.nc.IsConnected() {
		dctx, cancel := context.WithTimeout(ctx, g.cfg.PublishTimeout)
		if err := g.hosts.Delete(dctx, g.cfg.HostID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			errs = append(errs, fmt.Errorf("natsgw: leave: %w", err))
		}
		cancel()
	} else {
		g.log.Warn().Msg("closing while disconnected from NATS: the other hosts take this host's unfinished events once its heartbeat expires")
	}
	if g.ownConn && g.nc.IsConnected() {
		// Flush what is buffered (acknowledgements, deletions) first.
		if err := g.nc.FlushTimeout(g.cfg.PublishTimeout); err != nil {
			g.log.Debug().Err(err).Msg("flush before close")
		}
	}
	if g.ownConn {
		g.nc.Close()
	}
	return errors.Join(errs...)
}

// disconnected fails the sync calls in flight: their replies may never
// come, and the caller had better know now than at its deadline.
func (g *Gateway) disconnected(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.log.Warn().Err(err).Msg("disconnected from NATS; reconnecting")
	}
	for c := range g.calls {
		c.cancel(errConnLost)
	}
}

// ready fails when the connection is down: a call or event now would
// wait for a reconnect that may be far off.
func (g *Gateway) ready(what string) error {
	if g.nc.IsConnected() {
		return nil
	}
	return fmt.Errorf("%s: %w: not connected to NATS (%s)", what, invoker.ErrUnavailable, strings.ToLower(g.nc.Status().String()))
}

// checkSize refuses a payload the NATS server would refuse.
func (g *Gateway) checkSize(name string, payload []byte) error {
	if limit := g.nc.MaxPayload() - headerReserve; int64(len(payload)) > limit {
		return fmt.Errorf("invoke %q: %w: payload of %d bytes, the NATS server takes at most %d with headers (max_payload)",
			name, invoker.ErrTooLarge, len(payload), limit)
	}
	return nil
}

// Invoke implements invoker.Upstream: a request to the function's subject,
// which the hosts serving it share as a queue group.
func (g *Gateway) Invoke(ctx context.Context, name string, payload []byte, tr *invoker.Trace) (*invoker.Result, error) {
	return g.request(ctx, g.callPrefix+name, name, payload, tr, "")
}

// Offload implements invoker.Upstream: a request to one other host that
// serves name, chosen at random among those its last heartbeat listed.
func (g *Gateway) Offload(ctx context.Context, name string, payload []byte, tr *invoker.Trace) (*invoker.Result, error) {
	var hosts []string
	g.mu.Lock()
	for id, p := range g.peers {
		if id != g.cfg.HostID && slices.Contains(p.Functions, name) {
			hosts = append(hosts, id)
		}
	}
	g.mu.Unlock()
	if len(hosts) == 0 {
		return nil, fmt.Errorf("invoke %q: %w: no other host serves it", name, invoker.ErrOverloaded)
	}
	to := hosts[rand.IntN(len(hosts))]
	res, err := g.request(ctx, g.cfg.Prefix+".host."+to+".call."+name, name, payload, tr, to)
	if errors.Is(err, invoker.ErrNotFound) {
		// That host is gone or no longer serves name: as good as full.
		return nil, fmt.Errorf("invoke %q: %w: host %s did not take it: %w", name, invoker.ErrOverloaded, to, err)
	}
	return res, err
}

// request sends a call to subject and waits for the reply, bounded by the
// trace's deadline (with a little more, for the answer to come back) or
// CallTimeout.
func (g *Gateway) request(ctx context.Context, subject, name string, payload []byte, tr *invoker.Trace, to string) (*invoker.Result, error) {
	if err := invoker.ValidateName(name); err != nil {
		return nil, err
	}
	if err := g.checkSize(name, payload); err != nil {
		return nil, err
	}
	if err := g.ready("invoke " + name); err != nil {
		return nil, err
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set(hdrOrigin, g.cfg.HostID)
	putTrace(msg.Header, tr)
	msg.Data = payload

	deadline := time.Now().Add(g.cfg.CallTimeout)
	if tr != nil && !tr.Deadline.IsZero() {
		deadline = tr.Deadline.Add(invoker.CallReserve / 2)
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	cctx, cancelCause := context.WithCancelCause(cctx)
	defer cancelCause(nil)
	c := &callState{cancel: cancelCause}
	g.mu.Lock()
	g.calls[c] = struct{}{}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.calls, c)
		g.mu.Unlock()
	}()

	start := time.Now()
	reply, err := g.nc.RequestMsgWithContext(cctx, msg)
	switch {
	case err == nil:
		return getResult(reply)
	case errors.Is(err, nats.ErrNoResponders):
		if to != "" {
			return nil, fmt.Errorf("invoke %q: %w: host %s does not serve it", name, invoker.ErrNotFound, to)
		}
		// The view may be a heartbeat old: read it again.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.cfg.PublishTimeout)
		rerr := g.refreshPeers(rctx)
		cancel()
		if rerr == nil && g.servedByPeer(name) {
			return nil, fmt.Errorf("invoke %q: %w: no host answered, though one serves it (reconnecting?)", name, invoker.ErrUnavailable)
		}
		return nil, fmt.Errorf("invoke %q: %w: no host serves it", name, invoker.ErrNotFound)
	case errors.Is(context.Cause(cctx), errConnLost):
		return nil, fmt.Errorf("invoke %q: %w: %w", name, invoker.ErrUnavailable, errConnLost)
	case errors.Is(ctx.Err(), context.Canceled):
		return nil, fmt.Errorf("invoke %q: %w", name, ctx.Err())
	case cctx.Err() != nil:
		return nil, fmt.Errorf("invoke %q: %w: no answer from the host serving it within %v", name, invoker.ErrTimeout, time.Since(start).Round(time.Millisecond))
	case errors.Is(err, nats.ErrMaxPayload):
		return nil, fmt.Errorf("invoke %q: %w: %w", name, invoker.ErrTooLarge, err)
	}
	return nil, fmt.Errorf("invoke %q: %w: %w", name, invoker.ErrUnavailable, err)
}

// InvokeAsync implements invoker.Upstream: the event is stored in the
// events stream, from which a host that serves the function takes it. A
// function no host serves is ErrNotFound.
func (g *Gateway) InvokeAsync(ctx context.Context, ev invoker.Event) error {
	if err := invoker.ValidateName(ev.Function); err != nil {
		return err
	}
	if err := g.checkSize(ev.Function, ev.Payload); err != nil {
		return err
	}
	if err := g.ready("invoke " + ev.Function); err != nil {
		return err
	}
	if !g.served(ctx, ev.Function) {
		return fmt.Errorf("invoke %q: %w: no host serves it", ev.Function, invoker.ErrNotFound)
	}
	msg := nats.NewMsg(g.eventPrefix + ev.Function)
	putEvent(msg.Header, ev)
	msg.Header.Set(hdrOrigin, g.cfg.HostID)
	msg.Data = ev.Payload
	if _, err := g.publish(ctx, msg); err != nil {
		return fmt.Errorf("invoke %q: store the event: %w", ev.Function, err)
	}
	return nil
}

// served reports whether some live host serves name, asking the bucket
// again when the last heartbeat's view says none does.
func (g *Gateway) served(ctx context.Context, name string) bool {
	if g.servedByPeer(name) {
		return true
	}
	if err := g.refreshPeers(ctx); err != nil {
		g.log.Debug().Err(err).Msg("read the live hosts")
	}
	return g.servedByPeer(name)
}

// servedByPeer reports whether the last heartbeat's view has a host that
// serves name.
func (g *Gateway) servedByPeer(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.peers {
		if slices.Contains(p.Functions, name) {
			return true
		}
	}
	return false
}

// publish stores msg in its stream, within PublishTimeout.
func (g *Gateway) publish(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.PublishTimeout)
	defer cancel()
	ack, err := g.js.PublishMsg(ctx, msg)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) || errors.Is(err, nats.ErrMaxPayload) {
			return nil, fmt.Errorf("%w: %w", invoker.ErrTooLarge, err)
		}
		return nil, fmt.Errorf("%w: %w", invoker.ErrUnavailable, err)
	}
	return ack, nil
}

// Backup implements invoker.Upstream: a copy of ev in the backups stream,
// under this host's name, until Done deletes it. If this host stops
// saying it is alive first, another host moves the copy to the events
// stream, where a host that serves the function takes it.
func (g *Gateway) Backup(ctx context.Context, ev invoker.Event) (invoker.Backup, error) {
	if err := invoker.ValidateName(ev.Function); err != nil {
		return nil, err
	}
	if err := g.checkSize(ev.Function, ev.Payload); err != nil {
		return nil, err
	}
	if err := g.ready("back up an event of " + ev.Function); err != nil {
		return nil, err
	}
	msg := nats.NewMsg(g.backupPrefix + g.cfg.HostID + "." + ev.Function)
	putEvent(msg.Header, ev)
	msg.Header.Set(hdrOrigin, g.cfg.HostID)
	msg.Data = ev.Payload
	ack, err := g.publish(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("back up an event of %q: %w", ev.Function, err)
	}
	return &backup{g: g, ref: backupRef{seq: ack.Sequence, created: g.backupsCreated.Load()}}, nil
}

// backup is a copy in the backups stream.
type backup struct {
	g   *Gateway
	ref backupRef
}

// backupRef names a copy: its sequence number in the incarnation of the
// backups stream created then.
type backupRef struct {
	seq     uint64
	created int64
}

// Done implements invoker.Backup: the copy is deleted in the background,
// so that the invoker's worker does not wait for the round trip; Close
// waits for the deletions queued before it. If this host dies in between,
// the event runs again on another host (at least once). A copy that is
// gone already (another host took it over) is no error.
func (b *backup) Done(ctx context.Context) error {
	g := b.g
	g.delMu.Lock()
	if !g.delClosed {
		select {
		case g.deletes <- b.ref:
			g.delMu.Unlock()
			return nil
		default: // a backlog: delete it here
		}
	}
	g.delMu.Unlock()
	return g.deleteBackup(ctx, b.ref)
}

func (g *Gateway) deleteBackup(ctx context.Context, ref backupRef) error {
	if ref.created != g.backupsCreated.Load() {
		return nil // the stream was made anew: the copy went with the old one
	}
	err := g.backups.DeleteMsg(ctx, ref.seq)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("natsgw: delete backup %d: %w", ref.seq, err)
	}
	return nil
}

// progress tells the server, every third of AckWait, that the events
// delivered to this host are still being worked on, until Close.
func (g *Gateway) progress() {
	defer close(g.progressDone)
	t := time.NewTicker(g.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-g.stopProgress:
			return
		case <-t.C:
			g.inflightMu.Lock()
			for m := range g.inflight {
				_ = m.InProgress()
			}
			g.inflightMu.Unlock()
		}
	}
}

// deleteBackups deletes the backups Done queued, until Close.
func (g *Gateway) deleteBackups() {
	defer close(g.deleted)
	for ref := range g.deletes {
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.PublishTimeout)
		if err := g.deleteBackup(ctx, ref); err != nil {
			g.log.Warn().Err(err).Msg("a finished event's backup copy stays: another host may run the event again")
		}
		cancel()
	}
}
