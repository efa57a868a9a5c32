//go:build linux

package benchmarks

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/invoker"
	"github.com/sockfaas/sockfaas/invoker/natsgw"
	"github.com/sockfaas/sockfaas/invoker/natsgw/embedded"
)

// The functions of BenchmarkChain.
const (
	chainEcho = `def lambda_handler(event, context):
    return {"ok": True}
`
	// chainSender sends one event to event["to"], stamped with the
	// wall clock (the same clock in every process of the machine).
	chainSender = `import time
import sockfaas

def lambda_handler(event, context):
    return {"id": sockfaas.invoke_async(event["to"], {"t0": time.time_ns()})}
`
	// chainStamp returns how long its event took to reach it.
	chainStamp = `import time

def lambda_handler(event, context):
    return {"lat": time.time_ns() - event["t0"]}
`
	// chainStage is one stage of a pipeline: it sends an event to the
	// next stage, if any, and returns that event's id.
	chainStage = `import sockfaas

def lambda_handler(event, context):
    rest = event.get("next") or []
    if rest:
        return {"id": sockfaas.invoke_async(rest[0], {"next": rest[1:]})}
    return {"done": True}
`
)

// callerCode is invoker/testdata/sdk/caller.py.
func callerCode(b *testing.B) string {
	code, err := os.ReadFile(filepath.Join("..", "invoker", "testdata", "sdk", "caller.py"))
	if err != nil {
		b.Fatal(err)
	}
	return string(code)
}

// chainHost is an invoker with a NATS gateway.
type chainHost struct {
	iv *invoker.Invoker
	gw *natsgw.Gateway
}

func newChainHost(b *testing.B, url, id string, opts ...invoker.Option) *chainHost {
	ctx := context.Background()
	h := &chainHost{}
	if url != "" {
		gw, err := natsgw.New(ctx, natsgw.Config{URL: url, HostID: id, Prefix: "bench",
			Logger: zerolog.New(os.Stderr).Level(zerolog.WarnLevel)})
		if err != nil {
			b.Fatal(err)
		}
		h.gw = gw
		opts = append(opts, invoker.WithUpstream(gw))
	}
	base := []invoker.Option{
		invoker.WithStateDir(stateDir(b)), invoker.WithRegistryDir(b.TempDir()),
		invoker.WithCgroupName("/" + benchName(b)), invoker.WithNetwork(nil),
		invoker.WithPauseAfter(-1), invoker.WithGenericSandboxes(2), invoker.WithAsync(invoker.DefaultAsyncWorkers, 1<<16),
	}
	iv, err := invoker.New(ctx, append(base, opts...)...)
	if err != nil {
		if h.gw != nil {
			_ = h.gw.Close(ctx)
		}
		b.Fatal(err)
	}
	h.iv = iv
	b.Cleanup(func() {
		if err := iv.Close(context.Background()); err != nil {
			b.Error(err)
		}
		if h.gw != nil {
			if err := h.gw.Close(context.Background()); err != nil {
				b.Error(err)
			}
		}
	})
	return h
}

func (h *chainHost) deploy(b *testing.B, name, code, manifest string) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "lambda_function.py"), []byte(code), 0o644); err != nil {
		b.Fatal(err)
	}
	if manifest != "" {
		if err := os.WriteFile(filepath.Join(dir, "sockfaas.yaml"), []byte(manifest), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := h.iv.Deploy(context.Background(), name, invoker.FromDir(dir)); err != nil {
		b.Fatal(err)
	}
}

// calls runs n calls from caller to callee inside the caller and returns
// their latencies.
func (h *chainHost) calls(b *testing.B, callee string, n int) []time.Duration {
	res, err := h.iv.Invoke(context.Background(), "caller", fmt.Appendf(nil, `{"op":"bench","to":%q,"n":%d}`, callee, n), invoker.InvokeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if res.FunctionError {
		b.Fatalf("caller raised: %s", res.Payload)
	}
	var ns []int64
	if err := json.Unmarshal(res.Payload, &ns); err != nil {
		b.Fatal(err)
	}
	out := make([]time.Duration, len(ns))
	for i, v := range ns {
		out[i] = time.Duration(v)
	}
	return out
}

// BenchmarkChain compares a warm function→function call through the local
// queue with the same call through the NATS upstream to another host (an
// embedded nats-server on loopback; both hosts on this machine), timed
// inside the caller around sockfaas.invoke and interleaved in chunks so
// that both see the same machine; then the latency of one event from a
// function to another (invoke_async to the callee's start), locally and
// through JetStream to the other host. It then measures the throughput of a
// 3-stage asynchronous pipeline (stage 1 sends an event to stage 2, which
// sends one to stage 3): all stages on one host without an upstream
// (local), on one host with SAND's backup copy of every event kept in
// JetStream (local+backup), and with stage 2 on the other host, so each
// pipeline crosses NATS twice (nats).
func BenchmarkChain(b *testing.B) {
	requireRoot(b)
	srv, err := embedded.Start(context.Background(), embedded.Config{Listen: "127.0.0.1:0", StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	a := newChainHost(b, srv.URL(), "bench-a")
	bb := newChainHost(b, srv.URL(), "bench-b")
	single := newChainHost(b, "", "")

	// The local queue tests' caller: its "bench" op calls event["to"] n
	// times through the SDK and returns each call's latency, timed inside
	// the caller.
	a.deploy(b, "caller", callerCode(b), "timeout_sec: 120\n")
	a.deploy(b, "echo", chainEcho, "")
	bb.deploy(b, "remote-echo", chainEcho, "")
	for _, h := range []*chainHost{a, single} {
		for _, s := range []string{"s1", "s2", "s3"} {
			h.deploy(b, s, chainStage, "")
		}
	}
	bb.deploy(b, "remote-s2", chainStage, "")
	for _, h := range []*chainHost{a, single} {
		h.deploy(b, "sender", chainSender, "")
		h.deploy(b, "stamp", chainStamp, "")
	}
	bb.deploy(b, "remote-stamp", chainStamp, "")
	// Until A's gateway has seen B's heartbeat, and everything is warm.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := a.iv.Invoke(context.Background(), "remote-echo", []byte(`{}`), invoker.InvokeOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("host b's functions never reachable from host a: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.calls(b, "echo", 10)
	a.calls(b, "remote-echo", 10)

	b.Run("call", func(b *testing.B) {
		var local, remote latencies
		b.ResetTimer()
		for left := b.N; left > 0; {
			n := min(left, 200)
			left -= n
			for _, d := range a.calls(b, "echo", n) {
				local.add(d)
			}
			for _, d := range a.calls(b, "remote-echo", n) {
				remote.add(d)
			}
		}
		b.StopTimer()
		local.reportAs(b, "local-")
		remote.reportAs(b, "nats-")
		b.ReportMetric(remote.p50()/local.p50(), "nats/local-p50")
	})

	// One event at a time from a function to another: from the sender's
	// invoke_async to the callee's handler starting, on the wall clock.
	b.Run("event", func(b *testing.B) {
		variants := []struct {
			name     string
			from, to *chainHost
			callee   string
		}{
			{"local-", single, single, "stamp"},
			{"local+backup-", a, a, "stamp"},
			{"nats-", a, bb, "remote-stamp"},
		}
		lat := make([]latencies, len(variants))
		send := func(v int) {
			ctx := context.Background()
			res, err := variants[v].from.iv.Invoke(ctx, "sender", fmt.Appendf(nil, `{"to":%q}`, variants[v].callee), invoker.InvokeOptions{})
			if err != nil || res.FunctionError {
				b.Fatalf("sender: %v %v", res, err)
			}
			var out struct{ ID string }
			if err := json.Unmarshal(res.Payload, &out); err != nil {
				b.Fatal(err)
			}
			var got struct{ Lat int64 }
			if err := json.Unmarshal(waitAsync(b, variants[v].to.iv, out.ID).Payload, &got); err != nil {
				b.Fatal(err)
			}
			lat[v].add(time.Duration(got.Lat))
		}
		for v := range variants { // warm
			send(v)
		}
		lat = make([]latencies, len(variants))
		b.ResetTimer()
		for range b.N {
			for v := range variants {
				send(v)
			}
		}
		b.StopTimer()
		for v, vr := range variants {
			lat[v].reportAs(b, vr.name)
		}
		b.ReportMetric(lat[2].p50()/lat[0].p50(), "nats/local-p50")
	})

	pipeline := func(b *testing.B, h *chainHost, stages []string, hostOf func(stage int) *chainHost) {
		next, _ := json.Marshal(map[string]any{"next": stages[1:]})
		ctx := context.Background()
		run := func(n int) time.Duration {
			start := time.Now()
			ids := make([]string, n)
			for i := range n {
				id, err := h.iv.InvokeAsync(ctx, stages[0], next, invoker.InvokeOptions{})
				if err != nil {
					b.Fatal(err)
				}
				ids[i] = id
			}
			for _, id := range ids {
				for stage := range len(stages) {
					res := waitAsync(b, hostOf(stage).iv, id)
					var out struct{ ID string }
					if err := json.Unmarshal(res.Payload, &out); err != nil {
						b.Fatalf("stage %d answered %s: %v", stage+1, res.Payload, err)
					}
					id = out.ID
				}
			}
			return time.Since(start)
		}
		run(4) // every stage warm
		b.ResetTimer()
		d := run(b.N)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/d.Seconds(), "pipelines/s")
	}
	stages := []string{"s1", "s2", "s3"}
	b.Run("pipeline/local", func(b *testing.B) {
		pipeline(b, single, stages, func(int) *chainHost { return single })
	})
	b.Run("pipeline/local+backup", func(b *testing.B) {
		pipeline(b, a, stages, func(int) *chainHost { return a })
	})
	b.Run("pipeline/nats", func(b *testing.B) {
		pipeline(b, a, []string{"s1", "remote-s2", "s3"}, func(stage int) *chainHost {
			if stage == 1 {
				return bb
			}
			return a
		})
	})
}

// waitAsync waits for the asynchronous invocation id on iv and returns its
// result.
func waitAsync(b *testing.B, iv *invoker.Invoker, id string) *invoker.Result {
	deadline := time.Now().Add(time.Minute)
	for {
		res, done, err := iv.AsyncResult(id)
		switch {
		case done && err != nil:
			b.Fatalf("event %s: %v", id, err)
		case done:
			if res.FunctionError {
				b.Fatalf("event %s raised: %s", id, res.Payload)
			}
			return res
		case time.Now().After(deadline):
			b.Fatalf("event %s not done after a minute", id)
		}
		time.Sleep(200 * time.Microsecond)
	}
}
