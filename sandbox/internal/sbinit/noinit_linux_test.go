package sbinit

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// With NoInit the program is PID 1 of its namespace and the host pid is
// its own: started fresh or from a parked helper, its exit status and a
// SIGKILL come back as they are.
func TestNoInit(t *testing.T) {
	l := newLauncher(t)
	root := minimalRoot(t)
	script := `echo $$; read x; exit 7` // waits for a line on stdin
	for _, parked := range []bool{false, true} {
		cfg := sandboxConfig(root, "/bin/sh", "-c", script)
		cfg.NoInit = true
		inR, inW, err := os.Pipe()
		must(t, err)
		outR, outW, err := os.Pipe()
		must(t, err)
		cfg.Stdin, cfg.Stdout = inR, outW
		var p *Process
		if parked {
			pk, err := l.Park(context.Background(), root, allNS, true, nil)
			must(t, err)
			t.Cleanup(func() { _ = pk.Close() })
			wrong := cfg
			wrong.NoInit = false
			if _, err := pk.Start(context.Background(), wrong); !errors.Is(err, ErrNotParkable) {
				t.Fatalf("a program with an init on a helper parked without: %v, want ErrNotParkable", err)
			}
			p, err = pk.Start(context.Background(), cfg)
			must(t, err)
		} else {
			p, err = l.Start(context.Background(), cfg)
			must(t, err)
		}
		inR.Close()
		outW.Close()
		line := make([]byte, 16)
		n, _ := outR.Read(line)
		if got := strings.TrimSpace(string(line[:n])); got != "1" {
			t.Errorf("parked=%v: the program's pid is %q inside, want 1", parked, got)
		}
		// The host pid is the shell's: no init in between.
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/comm")
		if strings.TrimSpace(string(comm)) != "sh" {
			t.Errorf("parked=%v: host pid %d is %q, want the program (sh)", parked, p.Pid(), comm)
		}
		_, _ = inW.WriteString("go\n")
		ws, err := p.Wait()
		if err != nil || !ws.Exited() || ws.ExitStatus() != 7 {
			t.Errorf("parked=%v: wait: %v %v, want exit 7", parked, ws, err)
		}
		inW.Close()
		outR.Close()
	}

	// SIGKILL reaches PID 1 from outside.
	cfg := sandboxConfig(root, "/bin/sleep", "100")
	cfg.NoInit = true
	p, err := l.Start(context.Background(), cfg)
	must(t, err)
	time.Sleep(10 * time.Millisecond)
	must(t, p.Signal(syscall.SIGKILL))
	if ws, err := p.Wait(); err != nil || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("after SIGKILL: %v %v", ws, err)
	}
}

// A helper parked with an init takes only programs that want one.
func TestParkedWithInitRefusesNoInit(t *testing.T) {
	l := newLauncher(t)
	root := minimalRoot(t)
	pk := parkT(t, l, root, allNS, nil)
	cfg := sandboxConfig(root, "/bin/true")
	cfg.NoInit = true
	if _, err := pk.Start(context.Background(), cfg); !errors.Is(err, ErrNotParkable) {
		t.Fatalf("NoInit on a helper parked with an init: %v, want ErrNotParkable", err)
	}
	// Still parked: the right program runs.
	cfg.NoInit = false
	p, err := pk.Start(context.Background(), cfg)
	must(t, err)
	if ws, err := p.Wait(); err != nil || ws.ExitStatus() != 0 {
		t.Errorf("wait: %v %v", ws, err)
	}
}
