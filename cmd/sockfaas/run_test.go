//go:build linux

package main_test

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/internal/testutil"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// server is a `sockfaas run` started by a test.
type server struct {
	cmd      *exec.Cmd
	endpoint string
	stdout   testutil.SyncBuffer
	stderr   testutil.SyncBuffer
	exited   chan struct{}
	err      error
}

// startServer starts `sockfaas run` with args on a free loopback port,
// without a network manager and with a registry of its own, and waits until
// it answers /healthz.
func (c *cli) startServer(args ...string) *server {
	c.t.Helper()
	port := freePort(c.t)
	s := &server{endpoint: "http://127.0.0.1:" + port, exited: make(chan struct{})}
	s.cmd = c.command(append([]string{"run", "--no-network", "--listen", "127.0.0.1:" + port, "--registry-dir", c.t.TempDir()}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	if err := s.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.exited) }()
	c.t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(60 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.exited
			}
		}
	})
	deadline := time.Now().Add(3 * time.Minute)
	for {
		resp, err := http.Get(s.endpoint + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				// The banner was written before the listener served,
				// but it reaches s.stdout through os/exec's copying
				// goroutine: give that a moment.
				for end := time.Now().Add(5 * time.Second); !strings.Contains(s.stdout.String(), "sockfaas is running at") && time.Now().Before(end); {
					time.Sleep(10 * time.Millisecond)
				}
				return s
			}
		}
		select {
		case <-s.exited:
			c.t.Fatalf("sockfaas run exited early: %v\nstdout:\n%s\nstderr:\n%s", s.err, s.stdout.String(), s.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("sockfaas run not healthy after 3 minutes\nstderr:\n%s", s.stderr.String())
		}
	}
}

// stop sends SIGTERM and returns the exit code.
func (s *server) stop(t *testing.T) int {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(90 * time.Second):
		t.Fatalf("sockfaas run did not exit within 90 s of SIGTERM\nstderr:\n%s", s.stderr.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

// client runs a client command against s and returns stdout, stderr and the
// exit code.
func (c *cli) client(s *server, args ...string) (string, string, int) {
	c.t.Helper()
	return c.run(append(args, "--endpoint", s.endpoint)...)
}

func hasNumpy() bool {
	return exec.Command("/usr/bin/python3", "-c", "import numpy").Run() == nil
}

// TestRunAndClient starts `sockfaas run --examples` and uses every client
// command on it, then stops it and checks it left nothing behind.
func TestRunAndClient(t *testing.T) {
	c := newCLI(t)
	s := c.startServer("--examples")
	if out := s.stdout.String(); !strings.Contains(out, "sockfaas is running at "+s.endpoint) ||
		!strings.Contains(out, "aws lambda invoke --endpoint-url "+s.endpoint+" --function-name hello out.json") {
		t.Errorf("banner:\n%s", out)
	}

	// Deploy a directory and a .tar.gz.
	code := t.TempDir()
	writeFile(t, filepath.Join(code, "f.py"), "import sys\n\ndef f(event):\n    print('to the log', file=sys.stderr)\n    if event.get('fail'):\n        raise ValueError('asked to fail')\n    return {'twice': event.get('n', 0) * 2}\n")
	writeFile(t, filepath.Join(code, "sub", "data.txt"), "x\n")
	if err := os.Symlink("sub/data.txt", filepath.Join(code, "link.txt")); err != nil {
		t.Fatal(err)
	}
	if out, errs, rc := c.client(s, "deploy", "calc", code); rc != 0 || !strings.Contains(out, "deployed calc version 1") {
		t.Fatalf("deploy: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	outside := t.TempDir()
	if err := os.Symlink("/etc/hostname", filepath.Join(outside, "escape")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(outside, "f.py"), "def f(e):\n    return 1\n")
	if _, errs, rc := c.client(s, "deploy", "escape", outside); rc == 0 || !strings.Contains(errs, "points outside") {
		t.Errorf("deploy with a symlink out: code %d, stderr %q", rc, errs)
	}
	tgz := filepath.Join(t.TempDir(), "code.tar.gz")
	if out, err := exec.Command("tar", "-C", code, "-czf", tgz, "f.py").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	if out, errs, rc := c.client(s, "deploy", "calc2", tgz); rc != 0 || !strings.Contains(out, "deployed calc2") {
		t.Fatalf("deploy .tar.gz: code %d, stdout %q, stderr %q", rc, out, errs)
	}

	// Invoke: the examples, a deployed function, a handler error.
	if out, errs, rc := c.client(s, "invoke", "hello", "--data", `{"name":"test"}`); rc != 0 || !strings.Contains(out, "Hello, test!") {
		t.Fatalf("invoke hello: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if out, errs, rc := c.client(s, "invoke", "aws-echo", "-d", `{"k":"v"}`); rc != 0 || !strings.Contains(out, `"function_name": "aws-echo"`) && !strings.Contains(out, `"function_name":"aws-echo"`) || !strings.Contains(out, `"k"`) {
		t.Fatalf("invoke aws-echo: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	event := filepath.Join(t.TempDir(), "event.json")
	writeFile(t, event, `{"n": 21}`)
	if out, errs, rc := c.client(s, "invoke", "calc", "--data", "@"+event); rc != 0 || !strings.Contains(out, "42") {
		t.Fatalf("invoke calc @file: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if out, errs, rc := c.client(s, "invoke", "calc2", "--data", `{"n": 2}`); rc != 0 || !strings.Contains(out, "4") {
		t.Fatalf("invoke calc2: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if out, errs, rc := c.client(s, "invoke", "calc", "--data", `{"fail": true}`); rc != 1 || !strings.Contains(out, "asked to fail") {
		t.Fatalf("invoke with a handler error: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if _, errs, rc := c.client(s, "invoke", "calc", "--data", `{not json`); rc == 0 || !strings.Contains(errs, "not valid JSON") {
		t.Fatalf("invoke with bad JSON: code %d, stderr %q", rc, errs)
	}
	if hasNumpy() {
		if out, errs, rc := c.client(s, "invoke", "numpy", "--data", `{"n": 5}`); rc != 0 || !strings.Contains(out, "determinant") {
			t.Fatalf("invoke numpy: code %d, stdout %q, stderr %q", rc, out, errs)
		}
	} else {
		t.Log("numpy is not installed: not invoking the numpy example")
	}

	// Async: an id, then a result.
	out, errs, rc := c.client(s, "invoke", "calc", "--async", "--data", `{"n": 5}`)
	if id := strings.TrimSpace(out); rc != 0 || id == "" || strings.ContainsAny(id, " \n") {
		t.Fatalf("invoke --async: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if out, errs, rc := c.client(s, "invoke", "calc", "--async", "--wait", "--data", `{"n": 8}`); rc != 0 || !strings.Contains(out, "16") {
		t.Fatalf("invoke --async --wait: code %d, stdout %q, stderr %q", rc, out, errs)
	}

	// ls, ps, logs.
	out, errs, rc = c.client(s, "ls")
	for _, want := range []string{"NAME", "hello", "aws-echo", "calc", "calc2", "f.f", "lambda_function.lambda_handler"} {
		if rc != 0 || !strings.Contains(out, want) {
			t.Fatalf("ls: code %d, lacks %q: stdout %q, stderr %q", rc, want, out, errs)
		}
	}
	if out, errs, rc := c.client(s, "ps"); rc != 0 || !strings.Contains(out, "functions") || !strings.Contains(out, "calc") {
		t.Fatalf("ps: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if out, errs, rc := c.client(s, "logs", "calc", "--max", "4096"); rc != 0 || !strings.Contains(out, "to the log") {
		t.Fatalf("logs: code %d, stdout %q, stderr %q", rc, out, errs)
	}

	// An event that fails every attempt (three, a second and two apart)
	// ends in the dead letters.
	if out, _, rc := c.client(s, "dead-letters"); rc != 0 || !strings.Contains(out, "no dead letters") {
		t.Fatalf("dead-letters before any: code %d, stdout %q", rc, out)
	}
	out, errs, rc = c.client(s, "invoke", "calc", "--async", "--data", `{"fail": true}`)
	id := strings.TrimSpace(out)
	if rc != 0 || id == "" {
		t.Fatalf("invoke --async of a failing event: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, errs, rc := c.client(s, "dead-letters")
		if rc == 0 && strings.Contains(out, id) {
			if !strings.Contains(out, "asked to fail") || !strings.Contains(out, "3") {
				t.Errorf("dead-letters:\n%s", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the failing event never reached the dead letters: code %d, stdout %q, stderr %q", rc, out, errs)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// rm, then the function is gone.
	if out, errs, rc := c.client(s, "rm", "calc", "calc2"); rc != 0 || !strings.Contains(out, "removed calc2") {
		t.Fatalf("rm: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if _, errs, rc := c.client(s, "invoke", "calc"); rc == 0 || !strings.Contains(errs, "not found") {
		t.Fatalf("invoke after rm: code %d, stderr %q", rc, errs)
	}
	if out, _, _ := c.client(s, "ls"); strings.Contains(out, "calc") {
		t.Fatalf("ls after rm:\n%s", out)
	}

	if code := s.stop(t); code != 0 {
		t.Fatalf("sockfaas run exited %d after SIGTERM\nstderr:\n%s", code, s.stderr.String())
	}
	if !strings.Contains(s.stderr.String(), "nothing left behind") {
		t.Errorf("no closing message in the log:\n%s", s.stderr.String())
	}
	if left := c.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestRunTokenAndDrain: a token is required by the API and by the client;
// SIGTERM lets a call in flight finish.
func TestRunTokenAndDrain(t *testing.T) {
	c := newCLI(t)
	code := t.TempDir()
	writeFile(t, filepath.Join(code, "f.py"), "import time\n\ndef f(event):\n    time.sleep(event.get('sleep', 0))\n    return 'slept'\n")
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, "s3cret\n")
	s := c.startServer("--token-file", tokenFile, "--deploy", "sleepy="+code)
	if _, errs, rc := c.client(s, "ls"); rc == 0 || !strings.Contains(errs, "token") {
		t.Fatalf("ls without the token: code %d, stderr %q", rc, errs)
	}
	if out, errs, rc := c.client(s, "ls", "--token", "s3cret"); rc != 0 || !strings.Contains(out, "sleepy") {
		t.Fatalf("ls with the token: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if out, errs, rc := c.client(s, "ls", "--token-file", tokenFile); rc != 0 || !strings.Contains(out, "sleepy") {
		t.Fatalf("ls with the token file: code %d, stdout %q, stderr %q", rc, out, errs)
	}
	if _, errs, rc := c.client(s, "ls", "--token", "x", "--token-file", tokenFile); rc == 0 || !strings.Contains(errs, "pick one") {
		t.Fatalf("ls with both: code %d, stderr %q", rc, errs)
	}
	// A call in flight when SIGTERM comes still gets its answer.
	inflight := c.command("invoke", "sleepy", "--data", `{"sleep": 1.5}`, "--endpoint", s.endpoint, "--token", "s3cret")
	var out testutil.SyncBuffer
	inflight.Stdout, inflight.Stderr = &out, &out
	if err := inflight.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if code := s.stop(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM\nstderr:\n%s", code, s.stderr.String())
	}
	if err := inflight.Wait(); err != nil || !strings.Contains(out.String(), "slept") {
		t.Fatalf("the call in flight: %v: %s", err, out.String())
	}
	if left := c.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func TestRunRefusesPublicListenWithoutToken(t *testing.T) {
	c := newCLI(t)
	_, errs, rc := c.run("run", "--no-network", "--listen", "0.0.0.0:"+freePort(t), "--registry-dir", t.TempDir())
	if rc == 0 || !strings.Contains(errs, "--token") {
		t.Fatalf("code %d, stderr %q", rc, errs)
	}
}

func TestClientWithoutServer(t *testing.T) {
	c := newCLI(t)
	endpoint := "http://127.0.0.1:" + freePort(t)
	for _, args := range [][]string{{"ls"}, {"invoke", "hello"}, {"ps"}} {
		_, errs, rc := c.run(append(args, "--endpoint", endpoint)...)
		if rc != 1 || !strings.Contains(errs, "no sockfaas run at "+endpoint) || !strings.Contains(errs, "sockfaas run") {
			t.Errorf("%v: code %d, stderr %q", args, rc, errs)
		}
	}
}

func TestDoctor(t *testing.T) {
	c := newCLI(t)
	out, errs, rc := c.run("doctor")
	if rc != 0 && rc != 1 {
		t.Fatalf("doctor: code %d\n%s\n%s", rc, out, errs)
	}
	for _, want := range []string{"running as root", "kernel ", "cgroup layout", "iptables", "python3", "ip_forward"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" || strings.HasPrefix(line, "      ") || strings.HasPrefix(line, "ready") || strings.Contains(line, "problem") {
			continue
		}
		if !strings.HasPrefix(line, "ok ") && !strings.HasPrefix(line, "warn ") && !strings.HasPrefix(line, "FAIL ") {
			t.Errorf("doctor line without a verdict: %q", line)
		}
	}
	if (rc == 1) != strings.Contains(out, "FAIL") {
		t.Errorf("exit code %d does not match the verdicts:\n%s", rc, out)
	}
	t.Logf("doctor (exit %d):\n%s", rc, out)
}

func writeFile(t *testing.T, p, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
