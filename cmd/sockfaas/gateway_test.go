//go:build linux

package main_test

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Hosts of one cluster, as `sockfaas run --gateway` makes them: real
// binaries, an embedded NATS server on a free loopback port, its store in a
// test directory.

// writeFunction writes a function that says which function and host ran it.
func writeFunction(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f.py"), "def f(event):\n    return {'from': '"+name+"', 'got': event}\n")
	return dir
}

// invokeEventually invokes name on s until it succeeds: a host subscribes
// to a function deployed on it within a heartbeat (a second).
func (c *cli) invokeEventually(s *server, name, data string) string {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, errs, rc := c.client(s, "invoke", name, "--data", data)
		if rc == 0 {
			return out
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("invoke %s on %s: code %d, stdout %q, stderr %q", name, s.endpoint, rc, out, errs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stopClean stops s and checks it exited 0 and left nothing.
func (c *cli) stopClean(s *server) {
	c.t.Helper()
	if code := s.stop(c.t); code != 0 {
		c.t.Fatalf("sockfaas run exited %d after SIGTERM\nstderr:\n%s", code, s.stderr.String())
	}
	if !strings.Contains(s.stderr.String(), "nothing left behind") || !strings.Contains(s.stderr.String(), "gateway closed") {
		c.t.Errorf("no closing messages in the log:\n%s", s.stderr.String())
	}
	if left := c.leftovers(); len(left) > 0 {
		c.t.Fatalf("left behind: %v", left)
	}
}

func portFree(t *testing.T, addr string) bool {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// TestRunGatewayEmbedded: `run --gateway embedded` serves as usual, says
// which gateway it uses, and stops its NATS server with the rest.
func TestRunGatewayEmbedded(t *testing.T) {
	c := newCLI(t)
	nats := "127.0.0.1:" + freePort(t)
	store := t.TempDir()
	s := c.startServer("--gateway", "embedded", "--nats-listen", nats, "--nats-store", store, "--host-id", "solo",
		"--deploy", "echo="+writeFunction(t, "echo"))
	if out := s.stdout.String(); !strings.Contains(out, "gateway: embedded NATS server at nats://"+nats+", as host solo") ||
		!strings.Contains(out, "--gateway nats://"+nats) || !strings.Contains(out, "sockfaas invoke echo") {
		t.Errorf("banner:\n%s", out)
	}
	if out, errs, rc := c.client(s, "invoke", "echo", "--data", `{"n": 1}`); rc != 0 || !strings.Contains(out, `"from": "echo"`) {
		t.Fatalf("invoke: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if _, errs, rc := c.client(s, "invoke", "nowhere"); rc == 0 || !strings.Contains(errs, "not found") {
		t.Errorf("invoke a function no host serves: code %d, stderr %q", rc, errs)
	}
	c.stopClean(s)
	if !strings.Contains(s.stderr.String(), "embedded NATS server stopped") {
		t.Errorf("no word of the NATS server stopping:\n%s", s.stderr.String())
	}
	if !portFree(t, nats) {
		t.Errorf("%s still taken after sockfaas run stopped", nats)
	}
	if m, _ := filepath.Glob(filepath.Join(store, "jetstream", "*")); len(m) == 0 {
		t.Errorf("no JetStream store kept in %s", store)
	}
}

// TestRunGatewayTwoHosts: a host that joins the embedded server of another
// passes a call for a function it does not serve to the host that does, and
// the other way round.
func TestRunGatewayTwoHosts(t *testing.T) {
	c1, c2 := newCLI(t), newCLI(t)
	nats := "127.0.0.1:" + freePort(t)
	store := t.TempDir()
	s1 := c1.startServer("--gateway", "embedded", "--nats-listen", nats, "--nats-store", store, "--host-id", "one")
	s2 := c2.startServer("--gateway", "nats://"+nats, "--host-id", "two")
	if out := s2.stdout.String(); !strings.Contains(out, "gateway: NATS at nats://"+nats+", as host two") {
		t.Errorf("banner of the host that joined:\n%s", out)
	}
	if out, errs, rc := c1.client(s1, "deploy", "alpha", writeFunction(t, "alpha")); rc != 0 {
		t.Fatalf("deploy alpha on one: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if out, errs, rc := c2.client(s2, "deploy", "beta", writeFunction(t, "beta")); rc != 0 {
		t.Fatalf("deploy beta on two: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if out := c2.invokeEventually(s2, "alpha", `{"via": "two"}`); !strings.Contains(out, `"from": "alpha"`) || !strings.Contains(out, `"via": "two"`) {
		t.Errorf("alpha through two: %q", out)
	}
	if out := c1.invokeEventually(s1, "beta", `{"via": "one"}`); !strings.Contains(out, `"from": "beta"`) {
		t.Errorf("beta through one: %q", out)
	}
	// Each still has only its own function.
	if out, _, _ := c2.client(s2, "ls"); strings.Contains(out, "alpha") {
		t.Errorf("ls on two lists alpha:\n%s", out)
	}

	// A second embedded server on a taken port or on a store in use is
	// refused at once, before the invoker starts.
	c3 := newCLI(t)
	for _, tc := range []struct{ args []string }{
		{[]string{"--nats-listen", nats, "--nats-store", t.TempDir()}},
		{[]string{"--nats-listen", "127.0.0.1:" + freePort(t), "--nats-store", store}},
	} {
		args := append([]string{"run", "--no-network", "--listen", "127.0.0.1:" + freePort(t), "--registry-dir", t.TempDir(), "--gateway", "embedded"}, tc.args...)
		_, errs, rc := c3.run(args...)
		if rc == 0 || !strings.Contains(errs, "--gateway nats://") || !strings.Contains(errs, `"level":"error"`) {
			t.Errorf("%v: code %d, stderr %q", tc.args, rc, errs)
		}
		if strings.Contains(errs, "invoker ready") {
			t.Errorf("%v: the invoker started before the error:\n%s", tc.args, errs)
		}
	}
	if left := c3.leftovers(); len(left) > 0 {
		t.Fatalf("refused runs left behind: %v", left)
	}

	// The host that joined stops first: the server is the other's.
	c2.stopClean(s2)
	c1.stopClean(s1)
	if !portFree(t, nats) {
		t.Errorf("%s still taken after both stopped", nats)
	}
}

// TestRunGatewayBadInput: a bad --gateway, host id or unreachable server
// fails at once, with a message that says what to do, and leaves nothing.
func TestRunGatewayBadInput(t *testing.T) {
	c := newCLI(t)
	unreachable := "nats://127.0.0.1:" + freePort(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--gateway", "bogus"}, "--gateway takes none, embedded, or nats://HOST:PORT"},
		{[]string{"--gateway", "127.0.0.1:4222"}, "nats://127.0.0.1:4222?"},
		{[]string{"--gateway", "http://127.0.0.1:4222"}, `scheme \"http\"`},
		{[]string{"--gateway", unreachable}, "no NATS server answers there"},
		{[]string{"--gateway", "nats://u:hunter2@" + strings.TrimPrefix(unreachable, "nats://")}, "no NATS server answers there"},
		{[]string{"--gateway", "embedded", "--host-id", "no.dots", "--nats-store", t.TempDir()}, "--host-id"},
		{[]string{"--gateway", "embedded", "--nats-listen", "nonsense", "--nats-store", t.TempDir()}, "--nats-listen"},
	} {
		args := append([]string{"run", "--no-network", "--listen", "127.0.0.1:" + freePort(t), "--registry-dir", t.TempDir()}, tc.args...)
		start := time.Now()
		_, errs, rc := c.run(args...)
		if rc == 0 || !strings.Contains(errs, tc.want) || !strings.Contains(errs, `"level":"error"`) {
			t.Errorf("%v: code %d, stderr %q: want an error with %q", tc.args, rc, errs, tc.want)
		}
		if strings.Contains(errs, "hunter2") {
			t.Errorf("%v: the password is in the log: %q", tc.args, errs)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%v: took %v to fail", tc.args, d)
		}
	}
	if left := c.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}
