//go:build linux

package main_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/internal/testutil"
)

// The CLI is tested as a user runs it: the real binary, real sandboxes.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sockfaas-e2e-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "sockfaas")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		panic("build sockfaas: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type cli struct {
	t           *testing.T
	state, cgrp string
}

func newCLI(t *testing.T) *cli {
	testutil.RequiresRoot(t)
	return &cli{t: t, state: testutil.StateDir(t), cgrp: "/" + testutil.UniqueName(t)}
}

func (c *cli) command(args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "SOCKFAAS_STATE_DIR="+c.state, "SOCKFAAS_CGROUP="+c.cgrp, "SOCKFAAS_LOG_FORMAT=json")
	return cmd
}

// run returns stdout, stderr and the exit code.
func (c *cli) run(args ...string) (string, string, int) {
	c.t.Helper()
	var out, errb bytes.Buffer
	cmd := c.command(args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		c.t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// leftovers lists what a run left: entries in the state dir, cgroups.
func (c *cli) leftovers() []string {
	var left []string
	entries, _ := os.ReadDir(c.state)
	for _, e := range entries {
		left = append(left, filepath.Join(c.state, e.Name()))
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*" + c.cgrp + "*")
	return append(append(left, cgs...), testutil.MountsUnder(c.state)...)
}

func TestSandboxRunExitCodes(t *testing.T) {
	c := newCLI(t)
	if out, _, code := c.run("sandbox", "run", "--", "/bin/sh", "-c", "echo hi; exit 7"); code != 7 || out != "hi\n" {
		t.Fatalf("exit 7: got code %d, stdout %q", code, out)
	}
	if _, errs, code := c.run("sandbox", "run", "--memory", "32M", "--", "/usr/bin/python3", "-c", "b = bytearray(200 << 20)"); code != 137 || !strings.Contains(errs, "out of memory") {
		t.Fatalf("OOM: got code %d, stderr %q", code, errs)
	}
	if left := c.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func TestSandboxRunBadInput(t *testing.T) {
	c := newCLI(t)
	for _, args := range [][]string{
		{"sandbox", "run", "--bind", "/nonexistent-sockfaas:/x", "--", "/bin/true"},
		{"sandbox", "run", "--bind", "/tmp:/x/../../etc", "--", "/bin/true"},
		{"sandbox", "run", "--memory", "lots", "--", "/bin/true"},
		{"sandbox", "run", "--user", "root", "--", "/bin/true"},
		{"sandbox", "run", "--", "/no/such/program"},
		{"sandbox", "run", "--publish", "8080:80", "--", "/bin/true"},
		{"sandbox", "run"},
	} {
		_, errs, code := c.run(args...)
		// Usage errors come from the flag parser, the rest are logged.
		if code == 0 || !(strings.Contains(errs, `"level":"error"`) || strings.HasPrefix(errs, "sockfaas: error:")) {
			t.Errorf("%v: code %d, stderr %q: want a clear error", args, code, errs)
		}
	}
	if left := c.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func TestDemo(t *testing.T) {
	c := newCLI(t)
	out, errs, code := c.run("demo", "--n", "20")
	if code != 0 {
		t.Fatalf("demo: code %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"hostname:      demo", "uid=65534", "base:          read-only", "scratch:       writable", "not there", "p50"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if left := c.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestCleanupAfterKilledCLI: a CLI killed with SIGKILL while its sandbox
// runs leaves everything behind; the next command removes it.
func TestCleanupAfterKilledCLI(t *testing.T) {
	c := newCLI(t)
	cmd := c.command("sandbox", "run", "--", "/bin/sh", "-c", "echo started; exec sleep 100")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := out.Read(buf); err != nil || !strings.HasPrefix(string(buf), "started") {
		_ = cmd.Process.Kill()
		t.Fatalf("sandbox did not start: %q %v", buf, err)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if len(testutil.MountsUnder(c.state)) == 0 {
		t.Fatal("expected the killed CLI's mounts to be left")
	}
	// The sandbox's process is still alive, in its cgroup.
	time.Sleep(50 * time.Millisecond)
	stdout, errs, code := c.run("cleanup")
	if code != 0 || !strings.Contains(stdout, "cleaned up 1 state directory") {
		t.Fatalf("cleanup: code %d, stdout %q, stderr %q", code, stdout, errs)
	}
	if left := c.leftovers(); len(left) > 0 {
		t.Fatalf("left behind after cleanup: %v", left)
	}
}

func TestCompletionAndVersion(t *testing.T) {
	c := newCLI(t)
	if out, _, code := c.run("completion", "bash"); code != 0 || !strings.Contains(out, "complete -F _sockfaas sockfaas") || !strings.Contains(out, "sandbox run") {
		t.Fatalf("completion: code %d: %s", code, out)
	}
	if out, _, code := c.run("version"); code != 0 || !strings.HasPrefix(out, "sockfaas ") {
		t.Fatalf("version: code %d: %s", code, out)
	}
}
