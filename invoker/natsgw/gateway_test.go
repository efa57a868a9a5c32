package natsgw

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/invoker"
	"github.com/sockfaas/sockfaas/invoker/natsgw/embedded"
)

// These tests run the gateway against a real NATS server (embedded) and a
// Host written in Go: the protocol between hosts, not the invoker (the
// tests in hosts_linux_test.go run real invokers).

func startServer(t testing.TB, listen, dir string) *embedded.Server {
	t.Helper()
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	if dir == "" {
		dir = t.TempDir()
	}
	srv, err := embedded.Start(context.Background(), embedded.Config{Listen: listen, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

func testConfig(t testing.TB, url, host string) Config {
	return Config{
		URL: url, HostID: host, Heartbeat: 100 * time.Millisecond, HostTTL: 500 * time.Millisecond,
		AckWait: 3 * time.Second, PublishTimeout: 2 * time.Second,
		Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Str("test-host", host).Logger(),
	}
}

func newGateway(t testing.TB, cfg Config) *Gateway {
	t.Helper()
	g, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close(context.Background()) })
	return g
}

// fakeHost serves the functions in fns, in Go.
type fakeHost struct {
	mu     sync.Mutex
	fns    map[string]func(payload []byte, tr *invoker.Trace) (*invoker.Result, error)
	events chan invoker.Event
	// hold keeps enqueued events unfinished: their done is sent here.
	hold chan func(error)
	seen map[string]bool
}

func newFakeHost(fns map[string]func([]byte, *invoker.Trace) (*invoker.Result, error)) *fakeHost {
	return &fakeHost{fns: fns, events: make(chan invoker.Event, 100), seen: map[string]bool{}}
}

func (h *fakeHost) Workers() int { return 32 }

func (h *fakeHost) Served() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var names []string
	for n := range h.fns {
		names = append(names, n)
	}
	return names
}

func (h *fakeHost) Run(ctx context.Context, name string, payload []byte, tr *invoker.Trace) (*invoker.Result, error) {
	h.mu.Lock()
	f := h.fns[name]
	h.mu.Unlock()
	if f == nil {
		return nil, fmt.Errorf("%q: %w", name, invoker.ErrNotFound)
	}
	return f(payload, tr)
}

func (h *fakeHost) Enqueue(ev invoker.Event, done func(error)) error {
	h.mu.Lock()
	_, ok := h.fns[ev.Function]
	dup := h.seen[ev.ID]
	h.seen[ev.ID] = true
	h.mu.Unlock()
	if !ok {
		return invoker.ErrNotFound
	}
	if !dup {
		h.events <- ev
	}
	if h.hold != nil {
		h.hold <- done
		return nil
	}
	go done(nil)
	return nil
}

func echo(payload []byte, tr *invoker.Trace) (*invoker.Result, error) {
	depth := 0
	if tr != nil {
		depth = tr.Depth
	}
	return &invoker.Result{RequestID: "r1", Payload: fmt.Appendf(nil, `{"echo":%s,"depth":%d}`, payload, depth), Start: "warm"}, nil
}

func attach(t testing.TB, g *Gateway, h invoker.Host) {
	t.Helper()
	if err := g.Attach(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Detach(context.Background()) })
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("waited %v for %s", time.Since(start).Round(time.Millisecond), what) }()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCallToAnotherHost(t *testing.T) {
	srv := startServer(t, "", "")
	a := newGateway(t, testConfig(t, srv.URL(), "a"))
	b := newGateway(t, testConfig(t, srv.URL(), "b"))
	attach(t, a, newFakeHost(nil))
	attach(t, b, newFakeHost(map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){
		"echo": echo,
		"raises": func([]byte, *invoker.Trace) (*invoker.Result, error) {
			return &invoker.Result{Payload: []byte(`{"errorMessage":"boom","errorType":"ValueError"}`), FunctionError: true}, nil
		},
		"slow": func([]byte, *invoker.Trace) (*invoker.Result, error) {
			return nil, &invoker.TimeoutError{Function: "slow", Timeout: time.Second}
		},
		"crashes": func([]byte, *invoker.Trace) (*invoker.Result, error) {
			return nil, fmt.Errorf("exit 1: %w", invoker.ErrFunctionCrashed)
		},
	}))
	ctx := context.Background()
	tr := &invoker.Trace{Caller: "caller@1", Depth: 2, Path: []string{"caller", "echo"}, Deadline: time.Now().Add(5 * time.Second)}
	res, err := a.Invoke(ctx, "echo", []byte(`{"x":1}`), tr)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Payload) != `{"echo":{"x":1},"depth":2}` || res.RequestID != "r1" || res.Start != "warm" {
		t.Errorf("result: %+v %s", res, res.Payload)
	}
	res, err = a.Invoke(ctx, "raises", nil, nil)
	if err != nil || !res.FunctionError || !strings.Contains(string(res.Payload), "boom") {
		t.Errorf("a handler's error: %+v, %v", res, err)
	}
	for name, want := range map[string]error{"slow": invoker.ErrTimeout, "crashes": invoker.ErrFunctionCrashed, "nowhere": invoker.ErrNotFound} {
		_, err := a.Invoke(ctx, name, nil, nil)
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
		t.Logf("%s: %v", name, err)
	}
	// A deadline that has passed by the time the reply would come.
	_, err = a.Invoke(ctx, "echo", nil, &invoker.Trace{Depth: 2, Path: []string{"c", "echo"}, Deadline: time.Now().Add(-time.Second)})
	if !errors.Is(err, invoker.ErrTimeout) {
		t.Errorf("past deadline: %v", err)
	}
	if _, err := a.Invoke(ctx, "bad.name", nil, nil); !errors.Is(err, invoker.ErrInvalid) {
		t.Errorf("bad name: %v", err)
	}
	// Offload goes to another host only.
	if _, err := b.Offload(ctx, "echo", nil, nil); !errors.Is(err, invoker.ErrOverloaded) {
		t.Errorf("offload with no other host: %v", err)
	}
	waitFor(t, 2*time.Second, "a to see b", func() bool { _, err := a.Offload(ctx, "echo", []byte(`1`), nil); return err == nil })
}

// TestMalformedTrace: a call whose trace headers are garbage is refused,
// not run.
func TestMalformedTrace(t *testing.T) {
	srv := startServer(t, "", "")
	b := newGateway(t, testConfig(t, srv.URL(), "b"))
	ran := false
	attach(t, b, newFakeHost(map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){
		"echo": func(p []byte, tr *invoker.Trace) (*invoker.Result, error) { ran = true; return echo(p, tr) },
	}))
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, h := range []nats.Header{
		{hdrDepth: {"-3"}}, {hdrDepth: {"x"}}, {hdrDepth: {"2"}, hdrDeadline: {"soon"}},
		{hdrDepth: {"2"}, hdrPath: {"a,../b"}}, {hdrDepth: {"99999"}},
	} {
		m := nats.NewMsg("sockfaas.call.echo")
		m.Header = h
		reply, err := nc.RequestMsg(m, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := getResult(reply); !errors.Is(err, invoker.ErrInvalid) {
			t.Errorf("%v: %v", h, err)
		}
	}
	if ran {
		t.Error("a call with a malformed trace ran")
	}
}

func TestEventToAnotherHost(t *testing.T) {
	srv := startServer(t, "", "")
	a := newGateway(t, testConfig(t, srv.URL(), "a"))
	b := newGateway(t, testConfig(t, srv.URL(), "b"))
	hb := newFakeHost(map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){"echo": echo})
	attach(t, a, newFakeHost(nil))
	attach(t, b, hb)
	ctx := context.Background()
	tr := &invoker.Trace{Caller: "caller@1", Depth: 2, Path: []string{"caller", "echo"}}
	if err := a.InvokeAsync(ctx, invoker.Event{ID: "e1", RequestID: "req-1", Function: "echo", Payload: []byte(`{}`), Trace: tr}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-hb.events:
		if ev.ID != "e1" || ev.RequestID != "req-1" || ev.Trace == nil || ev.Trace.Caller != "caller@1" || string(ev.Payload) != `{}` {
			t.Errorf("delivered: %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the event never reached b")
	}
	waitFor(t, 5*time.Second, "the event to be acknowledged", func() bool {
		info, err := a.events.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	if err := a.InvokeAsync(ctx, invoker.Event{ID: "e2", Function: "nowhere"}); !errors.Is(err, invoker.ErrNotFound) {
		t.Errorf("event for a function no host serves: %v", err)
	}
}

// TestBackupTakeover: a host that dies with a backed-up event unfinished
// has it run by another host, with the same ID and request ID; one whose
// backup is done is not run again.
func TestBackupTakeover(t *testing.T) {
	srv := startServer(t, "", "")
	ctx := context.Background()
	a := newGateway(t, testConfig(t, srv.URL(), "a"))
	attach(t, a, newFakeHost(map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){"work": echo}))
	unfinished, err := a.Backup(ctx, invoker.Event{ID: "e-unfinished", RequestID: "req-u", Function: "work", Payload: []byte(`1`)})
	if err != nil {
		t.Fatal(err)
	}
	_ = unfinished
	finished, err := a.Backup(ctx, invoker.Event{ID: "e-finished", Function: "work", Payload: []byte(`2`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := finished.Done(ctx); err != nil {
		t.Fatal(err)
	}
	// Done deletes in the background: a host that dies before that runs
	// the event again elsewhere (at least once). Here a lives long enough.
	waitFor(t, 5*time.Second, "the finished event's backup to go", func() bool {
		info, err := a.backups.Info(ctx)
		return err == nil && info.State.Msgs == 1
	})
	if n, err := Unfinished(ctx, a.nc, DefaultPrefix); err != nil || n != 1 {
		t.Errorf("Unfinished = %d, %v; want the one unfinished backup", n, err)
	}
	// a dies: its connection goes, its heartbeat stops, nobody says goodbye.
	a.mu.Lock()
	s := a.serving
	a.serving = nil
	a.mu.Unlock()
	s.cancel()
	a.nc.Close()

	b := newGateway(t, testConfig(t, srv.URL(), "b"))
	hb := newFakeHost(map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){"work": echo})
	attach(t, b, hb)
	select {
	case ev := <-hb.events:
		if ev.ID != "e-unfinished" || ev.RequestID != "req-u" || string(ev.Payload) != "1" {
			t.Errorf("taken over: %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b never ran a's unfinished event")
	}
	select {
	case ev := <-hb.events:
		t.Errorf("b ran another event: %+v", ev)
	case <-time.After(500 * time.Millisecond):
	}
	waitFor(t, 5*time.Second, "a's backups to be gone", func() bool {
		info, err := b.backups.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}

// TestDetachHandsBack: an event a host could not finish because it
// stopped goes to another host at once, not after AckWait.
func TestDetachHandsBack(t *testing.T) {
	srv := startServer(t, "", "")
	ctx := context.Background()
	a := newGateway(t, testConfig(t, srv.URL(), "a"))
	ha := newFakeHost(map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){"work": echo})
	ha.hold = make(chan func(error), 1)
	attach(t, a, ha)
	if err := a.InvokeAsync(ctx, invoker.Event{ID: "e1", Function: "work"}); err != nil {
		t.Fatal(err)
	}
	var done func(error)
	select {
	case done = <-ha.hold:
	case <-time.After(10 * time.Second):
		t.Fatal("a never got the event")
	}
	if err := a.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	b := newGateway(t, testConfig(t, srv.URL(), "b"))
	hb := newFakeHost(map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){"work": echo})
	attach(t, b, hb)
	start := time.Now()
	done(fmt.Errorf("stopping: %w", invoker.ErrClosed))
	select {
	case ev := <-hb.events:
		if ev.ID != "e1" {
			t.Errorf("b got %+v", ev)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("handed back after %v, want at once (AckWait is 3s)", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b never got the event a handed back")
	}
}

func TestOversizePayload(t *testing.T) {
	srv := startServer(t, "", "")
	a := newGateway(t, testConfig(t, srv.URL(), "a"))
	big := make([]byte, 9<<20)
	if _, err := a.Invoke(context.Background(), "echo", big, nil); !errors.Is(err, invoker.ErrTooLarge) {
		t.Errorf("sync: %v", err)
	}
	if err := a.InvokeAsync(context.Background(), invoker.Event{ID: "x", Function: "echo", Payload: big}); !errors.Is(err, invoker.ErrTooLarge) {
		t.Errorf("async: %v", err)
	}
	if _, err := a.Backup(context.Background(), invoker.Event{ID: "x", Function: "echo", Payload: big}); !errors.Is(err, invoker.ErrTooLarge) {
		t.Errorf("backup: %v", err)
	}
}

// TestHostIDInUse: a second host with a live host's ID is refused before
// it takes anything of the first's.
func TestHostIDInUse(t *testing.T) {
	srv := startServer(t, "", "")
	a := newGateway(t, testConfig(t, srv.URL(), "same"))
	attach(t, a, newFakeHost(nil))
	if _, err := a.Backup(context.Background(), invoker.Event{ID: "e1", Function: "f"}); err != nil {
		t.Fatal(err)
	}
	twin := newGateway(t, testConfig(t, srv.URL(), "same"))
	err := twin.Attach(context.Background(), newFakeHost(nil))
	if !errors.Is(err, ErrHostIDInUse) {
		t.Fatalf("attach with a live host's id: %v", err)
	}
	t.Log(err)
	if info, err := a.backups.Info(context.Background()); err != nil || info.State.Msgs != 1 {
		t.Errorf("the live host's backup: %+v, %v", info, err)
	}
	// An id with a password-less URL: the connect error names no secret.
	_, err = New(context.Background(), Config{URL: "nats://user:s3cret@127.0.0.1:1"})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("connect error shows the password: %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{URL: "nats://127.0.0.1:1", HostID: "a.b"},
		{URL: "nats://127.0.0.1:1", Prefix: "x>"},
		{URL: "nats://127.0.0.1:1", Heartbeat: time.Second, HostTTL: time.Second},
		{},
	} {
		if _, err := New(context.Background(), cfg); !errors.Is(err, invoker.ErrInvalid) {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
	// Nothing listens on port 1 of loopback.
	if _, err := New(context.Background(), Config{URL: "nats://127.0.0.1:1"}); !errors.Is(err, invoker.ErrUnavailable) {
		t.Errorf("no server: %v", err)
	}
}

// TestServerRestart: while the server is down, calls and events fail at
// once with ErrUnavailable; a call in flight when it goes fails too;
// after it is back (same port and store), everything works again, and an
// event stored before the restart is delivered.
func TestServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, "127.0.0.1:0", dir)
	url := srv.URL()
	listen := strings.TrimPrefix(url, "nats://")
	ctx := context.Background()
	a := newGateway(t, testConfig(t, url, "a"))
	b := newGateway(t, testConfig(t, url, "b"))
	hb := newFakeHost(map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){
		"echo": echo,
		"hang": func([]byte, *invoker.Trace) (*invoker.Result, error) {
			time.Sleep(3 * time.Second)
			return echo(nil, nil)
		},
	})
	hb.hold = make(chan func(error), 10)
	attach(t, a, newFakeHost(nil))
	attach(t, b, hb)
	if _, err := a.Invoke(ctx, "echo", []byte(`1`), nil); err != nil {
		t.Fatal(err)
	}
	// An event b takes and holds while the server goes away.
	if err := a.InvokeAsync(ctx, invoker.Event{ID: "before", Function: "echo", Payload: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	<-hb.events
	held := <-hb.hold

	inflight := make(chan error, 1)
	go func() {
		_, err := a.Invoke(ctx, "hang", nil, nil)
		inflight <- err
	}()
	time.Sleep(300 * time.Millisecond)
	srv.Shutdown()
	select {
	case err := <-inflight:
		if !errors.Is(err, invoker.ErrUnavailable) {
			t.Errorf("call in flight: %v", err)
		}
		t.Logf("call in flight: %v", err)
	case <-time.After(2 * time.Second):
		t.Error("a call in flight did not fail when the connection went")
	}
	waitFor(t, 5*time.Second, "a to notice", func() bool { return !a.nc.IsConnected() })
	start := time.Now()
	if _, err := a.Invoke(ctx, "echo", nil, nil); !errors.Is(err, invoker.ErrUnavailable) {
		t.Errorf("call while down: %v", err)
	}
	if err := a.InvokeAsync(ctx, invoker.Event{ID: "down", Function: "echo"}); !errors.Is(err, invoker.ErrUnavailable) {
		t.Errorf("event while down: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("failing while down took %v", time.Since(start))
	}

	srv2 := startServer(t, listen, dir)
	_ = srv2
	waitFor(t, 10*time.Second, "reconnect", func() bool { return a.nc.IsConnected() && b.nc.IsConnected() })
	waitFor(t, 10*time.Second, "calls to work again", func() bool {
		_, err := a.Invoke(ctx, "echo", []byte(`2`), nil)
		return err == nil
	})
	// b finishes the event it held; the acknowledgement reaches the new
	// server, so it is not delivered again.
	held(nil)
	if err := a.InvokeAsync(ctx, invoker.Event{ID: "after", Function: "echo", Payload: []byte(`3`)}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-hb.events:
		if ev.ID != "after" {
			t.Errorf("got %+v", ev)
		}
		(<-hb.hold)(nil)
	case <-time.After(10 * time.Second):
		t.Fatal("no event after the restart")
	}
	waitFor(t, 10*time.Second, "the events stream to be empty", func() bool {
		info, err := a.events.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	for _, g := range []*Gateway{a, b} {
		if err := g.Close(ctx); err != nil {
			t.Error(err)
		}
	}
}

// TestStoreLost: the NATS server comes back without its store (memory
// storage, a new machine): the hosts recreate the streams and their
// consumers, and events flow again.
func TestStoreLost(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", t.TempDir())
	url := srv.URL()
	listen := strings.TrimPrefix(url, "nats://")
	ctx := context.Background()
	a := newGateway(t, testConfig(t, url, "a"))
	b := newGateway(t, testConfig(t, url, "b"))
	hb := newFakeHost(map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){"echo": echo})
	attach(t, a, newFakeHost(nil))
	attach(t, b, hb)
	if err := a.InvokeAsync(ctx, invoker.Event{ID: "before", Function: "echo", Payload: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	<-hb.events
	srv.Shutdown()
	srv2 := startServer(t, listen, t.TempDir()) // a fresh, empty store
	waitFor(t, 10*time.Second, "reconnect", func() bool { return a.nc.IsConnected() && b.nc.IsConnected() })
	waitFor(t, 20*time.Second, "events to be taken again", func() bool {
		return a.InvokeAsync(ctx, invoker.Event{ID: "after", Function: "echo", Payload: []byte(`2`)}) == nil
	})
	select {
	case ev := <-hb.events:
		if ev.ID != "after" {
			t.Errorf("delivered %+v", ev)
		}
	case <-time.After(15 * time.Second):
		info, _ := a.events.Info(ctx)
		t.Fatalf("an event accepted after the store was lost was never delivered; the stream holds %d", info.State.Msgs)
	}
	for _, g := range []*Gateway{a, b} {
		if err := g.Close(ctx); err != nil {
			t.Error(err)
		}
	}
	srv2.Shutdown()
}

// TestDetachKeepsProgress: an event still running when the host detaches
// (the invoker's Close waits for it) is kept in progress: no other host
// gets it meanwhile.
func TestDetachKeepsProgress(t *testing.T) {
	srv := startServer(t, "", "")
	ctx := context.Background()
	ca := testConfig(t, srv.URL(), "a")
	ca.AckWait = time.Second
	a := newGateway(t, ca)
	ha := newFakeHost(map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){"work": echo})
	ha.hold = make(chan func(error), 1)
	attach(t, a, ha)
	if err := a.InvokeAsync(ctx, invoker.Event{ID: "e1", Function: "work"}); err != nil {
		t.Fatal(err)
	}
	done := <-ha.hold
	b := newGateway(t, testConfig(t, srv.URL(), "b"))
	hb := newFakeHost(map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){"work": echo})
	attach(t, b, hb)
	if err := a.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-hb.events:
		t.Errorf("b got %s while a still runs it", ev.ID)
	case <-time.After(3 * time.Second): // three AckWaits
	}
	done(nil)
}

// TestManyFunctionsFewSlots: a host serving more functions than it has
// event slots still takes each function's events within about a second.
func TestManyFunctionsFewSlots(t *testing.T) {
	srv := startServer(t, "", "")
	ctx := context.Background()
	fns := map[string]func([]byte, *invoker.Trace) (*invoker.Result, error){}
	for i := range 8 {
		fns[fmt.Sprintf("f%d", i)] = echo
	}
	cfg := testConfig(t, srv.URL(), "b")
	cfg.MaxEvents = 4
	b := newGateway(t, cfg)
	hb := newFakeHost(fns)
	attach(t, b, hb)
	a := newGateway(t, testConfig(t, srv.URL(), "a"))
	attach(t, a, newFakeHost(nil))
	for i := range 8 {
		start := time.Now()
		if err := a.InvokeAsync(ctx, invoker.Event{ID: fmt.Sprint("e", i), Function: fmt.Sprintf("f%d", i)}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-hb.events:
		case <-time.After(5 * time.Second):
			t.Fatalf("f%d's event not taken within 5s", i)
		}
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Errorf("f%d's event waited %v", i, d)
		}
	}
}
