//go:build linux

package benchmarks

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/invoker"
)

// invokeServer is an invoker behind its real HTTP API on a loopback port.
type invokeServer struct {
	inv    *invoker.Invoker
	url    string
	client *http.Client
}

func newInvokeServer(b *testing.B, opts ...invoker.Option) *invokeServer {
	ctx := context.Background()
	base := []invoker.Option{
		invoker.WithStateDir(stateDir(b)),
		invoker.WithRegistryDir(b.TempDir()),
		invoker.WithCgroupName("/" + benchName(b)),
		invoker.WithNetwork(nil),
		invoker.WithZygotes([][]string{{"numpy"}}),
	}
	inv, err := invoker.New(ctx, append(base, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: invoker.NewHandler(inv)}
	go func() { _ = srv.Serve(l) }()
	b.Cleanup(func() {
		_ = srv.Close()
		if err := inv.Close(context.Background()); err != nil {
			b.Error(err)
		}
	})
	// One keep-alive connection, as a client of a local invoker would use.
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	return &invokeServer{inv: inv, url: "http://" + l.Addr().String(), client: &http.Client{Transport: tr}}
}

// deploy uploads a function directory as a .tar.gz through the API.
func (s *invokeServer) deploy(b *testing.B, name, dir string) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = gz.Close()
	}
	if err != nil {
		b.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, s.url+"/v1/functions/"+name, &buf)
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := s.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		b.Fatalf("deploy %s: %s: %s", name, resp.Status, body)
	}
}

// invoke calls name through the native API and returns how the instance
// was started (warm, paused, cold, fresh).
func (s *invokeServer) invoke(name string) (string, error) {
	resp, err := s.client.Post(s.url+"/v1/functions/"+name+"/invoke", "application/json", bytes.NewReader([]byte(`{"name":"bench"}`)))
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Sockfaas-Function-Error") != "" {
		return "", fmt.Errorf("invoke %s: %s: %s", name, resp.Status, body)
	}
	return resp.Header.Get("X-Sockfaas-Start"), nil
}

// BenchmarkInvoke measures invocations through the HTTP API of a running
// invoker on loopback: warm back to back, warm with 20 ms gaps (as
// OpenLambda was measured), resumed from paused, and cold (a cached generic
// sandbox and a zygote fork) for hello and numpy. Each sub-benchmark checks
// that the start it measures is the one it claims.
func BenchmarkInvoke(b *testing.B) {
	requireRoot(b)
	hello, numpy := functionDir(b, "hello"), functionDir(b, "numpy")
	s := newInvokeServer(b, invoker.WithPauseAfter(time.Hour))
	s.deploy(b, "hello", hello)
	if _, err := s.invoke("hello"); err != nil { // make it warm
		b.Fatal(err)
	}

	measure := func(b *testing.B, name, want string, gap time.Duration) {
		var lat latencies
		for i := 0; i < b.N; i++ {
			if gap > 0 {
				b.StopTimer()
				time.Sleep(gap)
				b.StartTimer()
			}
			t0 := time.Now()
			start, err := s.invoke(name)
			if err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(t0))
			if start != want {
				b.Fatalf("start %q, want %q", start, want)
			}
		}
		lat.report(b)
	}
	b.Run("warm/back-to-back", func(b *testing.B) { measure(b, "hello", "warm", 0) })
	b.Run("warm/gaps-20ms", func(b *testing.B) { measure(b, "hello", "warm", 20*time.Millisecond) })
	// The floor of the same round trip: a Go HTTP handler that answers at
	// once, no sandbox or instance behind it. With gaps, this is what waking
	// idle CPUs costs on the machine.
	for _, gap := range []time.Duration{0, 20 * time.Millisecond} {
		b.Run(fmt.Sprintf("floor/gaps-%dms", gap.Milliseconds()), func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("X-Sockfaas-Start", "warm")
				_, _ = w.Write([]byte(`{"hello":"bench"}`))
			})}
			go func() { _ = srv.Serve(l) }()
			defer srv.Close()
			floor := &invokeServer{url: "http://" + l.Addr().String(), client: s.client}
			saved := s
			s = floor
			measure(b, "floor", "warm", gap)
			s = saved
		})
	}

	b.Run("paused", func(b *testing.B) {
		p := newInvokeServer(b, invoker.WithPauseAfter(5*time.Millisecond))
		p.deploy(b, "hello", hello)
		if _, err := p.invoke("hello"); err != nil {
			b.Fatal(err)
		}
		var lat latencies
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			time.Sleep(60 * time.Millisecond) // long enough to be paused
			b.StartTimer()
			t0 := time.Now()
			start, err := p.invoke("hello")
			if err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(t0))
			if start != "paused" {
				b.Fatalf("start %q, want paused", start)
			}
		}
		lat.report(b)
	})

	// Cold: every iteration calls a function deployed for it alone, so no
	// warm or paused instance exists; deployments happen before timing.
	for _, fn := range []struct{ name, dir string }{{"hello", hello}, {"numpy", numpy}} {
		b.Run("cold/"+fn.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s.deploy(b, fmt.Sprintf("%s-cold-%d-%d", fn.name, b.N, i), fn.dir)
			}
			var lat latencies
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				start, err := s.invoke(fmt.Sprintf("%s-cold-%d-%d", fn.name, b.N, i))
				if err != nil {
					b.Fatal(err)
				}
				lat.add(time.Since(t0))
				if start != "cold" {
					b.Fatalf("start %q, want cold", start)
				}
			}
			b.StopTimer()
			lat.report(b)
		})
	}
}
