package sbinit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/internal/testutil"
)

// parkT parks a helper in root. When the test ends it is closed, and it
// must be gone: reaped by Close, or by the Wait of the Process it became.
func parkT(tb testing.TB, l *Launcher, root string, flags uintptr, procs []*os.File) *Parked {
	tb.Helper()
	pk, err := l.Park(context.Background(), root, flags, false, procs)
	if err != nil {
		tb.Fatal(err)
	}
	if pk.Root() != root {
		tb.Errorf("Root() = %q, want %q", pk.Root(), root)
	}
	tb.Cleanup(func() {
		must(tb, pk.Close())
		if err := unix.Kill(pk.Pid(), 0); !errors.Is(err, unix.ESRCH) {
			tb.Errorf("helper %d still exists at the end of the test (kill 0: %v)", pk.Pid(), err)
			_ = pk.cmd.Process.Kill()
			_ = pk.cmd.Wait()
		}
	})
	return pk
}

// startParked starts cfg on pk with stdout and stderr on pipes (a parked
// helper takes *os.File stdio only). out returns stdout once the program
// and everything that held the pipe exited; stderr is logged.
func startParked(tb testing.TB, pk *Parked, cfg Config) (p *Process, out func() string) {
	tb.Helper()
	outR, outW, err := os.Pipe()
	must(tb, err)
	errR, errW, err := os.Pipe()
	must(tb, err)
	cfg.Stdout, cfg.Stderr = outW, errW
	p, err = pk.Start(context.Background(), cfg)
	// Sent to the helper (or refused): ours go, so EOF means the program's
	// copies went too.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		tb.Fatal(err)
	}
	var stdout, stderr []byte
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); stdout, _ = io.ReadAll(outR); outR.Close() }()
	go func() { defer wg.Done(); stderr, _ = io.ReadAll(errR); errR.Close() }()
	return p, func() string {
		wg.Wait()
		if len(stderr) > 0 {
			tb.Logf("stderr: %s", stderr)
		}
		return string(stdout)
	}
}

// runParked starts cfg on pk, waits, and returns stdout and the status.
func runParked(tb testing.TB, pk *Parked, cfg Config) (string, syscall.WaitStatus) {
	tb.Helper()
	p, out := startParked(tb, pk, cfg)
	ws, err := p.Wait()
	must(tb, err)
	assertGone(tb, p.Pid())
	return out(), ws
}

// childPids lists this process's children, zombies included, over all
// its threads (os/exec forks from whichever thread it runs on).
func childPids(tb testing.TB) []int {
	tb.Helper()
	files, err := filepath.Glob("/proc/self/task/*/children")
	must(tb, err)
	var pids []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited
		}
		for _, s := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(s)
			must(tb, err)
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return slices.Compact(pids)
}

// checkNoLeaks fails the test if it ends with children it did not start
// with: a helper or program neither reaped nor killed.
func checkNoLeaks(tb testing.TB) {
	tb.Helper()
	before := childPids(tb)
	tb.Cleanup(func() {
		for _, pid := range childPids(tb) {
			if !slices.Contains(before, pid) {
				cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				tb.Errorf("child %d (state %c, %q) left over", pid, procState(pid), cmdline)
			}
		}
	})
}

// procState is the state letter of pid in /proc/PID/stat ('Z' for a
// zombie), or 0 if there is no such process.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2]
	}
	return 0
}

// assertParked fails unless pid is still a parked helper: alive, not a
// zombie, still running the helper, with at most one child (with a PID
// namespace, PID 2 waits for the program), itself a parked helper without
// children.
func assertParked(tb testing.TB, pid int) {
	tb.Helper()
	if s := procState(pid); s == 0 || s == 'Z' || s == 'X' {
		tb.Fatalf("helper %d is not parked any more (state %q)", pid, s)
	}
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	must(tb, err)
	switch kids := strings.Fields(string(children)); len(kids) {
	case 0:
	case 1:
		kid, _ := strconv.Atoi(kids[0])
		if s := procState(kid); s == 0 || s == 'Z' || s == 'X' {
			tb.Errorf("parked helper %d: its PID 2 (%d) is gone (state %q)", pid, kid, s)
		}
		grand, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", kid, kid))
		if err == nil && len(bytes.TrimSpace(grand)) > 0 {
			tb.Errorf("parked helper %d: its PID 2 has children %q", pid, grand)
		}
	default:
		tb.Errorf("parked helper %d has children %q", pid, children)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	must(tb, err)
	if !strings.HasPrefix(string(cmdline), "sockfaas-init\x00") || !strings.HasSuffix(string(cmdline), "\x00park\x00") {
		tb.Errorf("parked helper %d runs %q", pid, cmdline)
	}
}

// statusFields maps the "Key:\tvalue" lines of a /proc/PID/status.
func statusFields(text string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func wantNoCapabilities(tb testing.TB, status map[string]string) {
	tb.Helper()
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if status[k] != "0000000000000000" {
			tb.Errorf("%s = %q, want 0", k, status[k])
		}
	}
	if status["NoNewPrivs"] != "1" {
		tb.Errorf("NoNewPrivs = %q, want 1", status["NoNewPrivs"])
	}
}

// TestParkStart: a parked helper, once started, runs the program in its
// root exactly as Launcher.Start would: argv and environment byte for byte,
// working directory, hostname, identity, no capabilities, PID 1 the
// helper, a /proc of its own and none of the host's mounts.
func TestParkStart(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)
	host, _ := os.Hostname()
	pk := parkT(t, l, root, allNS, nil)

	// Parked: in its namespaces, bounding set gone, no_new_privs set,
	// waiting with no child.
	assertParked(t, pk.Pid())
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pk.Pid()))
	must(t, err)
	st := statusFields(string(status))
	if st["CapBnd"] != "0000000000000000" || st["NoNewPrivs"] != "1" {
		t.Errorf("parked helper: CapBnd %s, NoNewPrivs %s; want 0 and 1", st["CapBnd"], st["NoNewPrivs"])
	}
	for _, ns := range []string{"pid", "mnt", "uts", "ipc"} {
		mine, _ := os.Readlink("/proc/self/ns/" + ns)
		its, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pk.Pid(), ns))
		must(t, err)
		if mine == its {
			t.Errorf("parked helper shares our %s namespace %s", ns, its)
		}
	}

	const script = `base64 -w0 /proc/$$/cmdline; echo
base64 -w0 /proc/$$/environ; echo
echo $$ /proc/[0-9]*
cat /proc/1/comm /proc/sys/kernel/hostname
pwd; id -u; id -g; id -G
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status
cat /proc/self/mountinfo`
	args := []string{"sh", "-c", script, "name", "", "--", "uid=0", "root=/etc", "a b", "--", ""}
	env := []string{testEnv, "A=b=c", "EMPTY=", "X===", "host=evil", "--"}
	cfg := sandboxConfig("/nonexistent-ignored", args...)
	cfg.Env = env
	cfg.Dir = "/tmp"
	out, ws := runParked(t, pk, cfg)
	wantExit(t, ws, 0)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 8+6 {
		t.Fatalf("output %q: too short", out)
	}
	for i, want := range [][]string{args, env} {
		b, err := base64.StdEncoding.DecodeString(lines[i])
		must(t, err)
		if got := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"); !slices.Equal(got, want) {
			t.Errorf("program's %s: %q, want %q", []string{"argv", "environment"}[i], got, want)
		}
	}
	want := []string{"2 /proc/1 /proc/2", "sockfaas-init", "sbx", "/tmp", "65534", "65534", "65534"}
	if got := lines[2 : 2+len(want)]; !slices.Equal(got, want) {
		t.Errorf("pid, /proc, PID 1, hostname, dir, ids:\n got %q\nwant %q", got, want)
	}
	rest := lines[2+len(want):]
	wantNoCapabilities(t, statusFields(strings.Join(rest[:6], "\n")))
	var mounts []string
	for _, line := range rest[6:] {
		if f := strings.Fields(line); len(f) > 8 {
			mounts = append(mounts, f[4]+" "+f[8])
		}
	}
	slices.Sort(mounts)
	want = []string{"/ tmpfs", "/dev/null " + fsType(t, filepath.Join(root, "dev/null")), "/proc proc", "/usr " + fsType(t, filepath.Join(root, "usr"))}
	slices.Sort(want)
	if !slices.Equal(mounts, want) {
		t.Errorf("program's mounts %q, want only the root's %q", mounts, want)
	}
	if now, _ := os.Hostname(); now != host {
		t.Errorf("host's hostname changed from %q to %q", host, now)
	}
	// Close after Start is a no-op.
	must(t, pk.Close())
	must(t, pk.Close())

	// The hostname is the one given at Start: another helper parked in
	// the same root takes another.
	pk = parkT(t, l, root, allNS, nil)
	cfg = sandboxConfig(root, "cat", "/proc/sys/kernel/hostname")
	cfg.Hostname = "other"
	out, ws = runParked(t, pk, cfg)
	wantExit(t, ws, 0)
	if out != "other\n" {
		t.Errorf("hostname %q, want %q", out, "other\n")
	}
}

// fsType is the file system type of the mount at path in our namespace.
func fsType(tb testing.TB, path string) string {
	tb.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	must(tb, err)
	typ := ""
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 8 && f[4] == path {
			typ = f[8] // the last one mounted there is the one seen
		}
	}
	if typ == "" {
		tb.Fatalf("%s is not a mount point", path)
	}
	return typ
}

// TestParkNoPIDNamespace: parked with only a mount namespace, the helper
// becomes the program (same pid), and /proc hides other users' processes.
func TestParkNoPIDNamespace(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)
	pk := parkT(t, l, root, unix.CLONE_NEWNS, nil)
	cfg := sandboxConfig(root, "sh", "-c", `echo $$; id -u; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status
if test -e /proc/1; then echo host init visible; else echo host init hidden; fi`)
	cfg.Cloneflags = unix.CLONE_NEWNS
	p, out := startParked(t, pk, cfg)
	ws, err := p.Wait()
	must(t, err)
	wantExit(t, ws, 0)
	lines := strings.Split(strings.TrimSuffix(out(), "\n"), "\n")
	if len(lines) != 9 || lines[0] != strconv.Itoa(pk.Pid()) || lines[1] != "65534" || lines[8] != "host init hidden" {
		t.Fatalf("output %q: want the helper's pid %d, uid 65534, status lines, host init hidden", lines, pk.Pid())
	}
	wantNoCapabilities(t, statusFields(strings.Join(lines[2:8], "\n")))
}

// TestParkExitAndSignal: the program's exit status and death by a signal
// come back through Process.Wait as from Launcher.Start.
func TestParkExitAndSignal(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)
	for _, flags := range []uintptr{allNS, unix.CLONE_NEWNS} {
		t.Run(fmt.Sprintf("flags=%#x", flags), func(t *testing.T) {
			cfg := sandboxConfig(root, "sh", "-c", "exit 3")
			cfg.Cloneflags = flags
			_, ws := runParked(t, parkT(t, l, root, flags, nil), cfg)
			wantExit(t, ws, 3)

			sigs := []syscall.Signal{syscall.SIGTERM, syscall.SIGINT}
			if flags&unix.CLONE_NEWPID != 0 {
				// Kills the helper, and the namespace with it: the status
				// is the helper's.
				sigs = append(sigs, syscall.SIGKILL)
			}
			for _, sig := range sigs {
				pk := parkT(t, l, root, flags, nil)
				cfg := sandboxConfig(root, "sleep", "100")
				cfg.Cloneflags = flags
				p, err := pk.Start(context.Background(), cfg)
				must(t, err)
				start := time.Now()
				must(t, p.Signal(sig))
				ws, err := p.Wait()
				must(t, err)
				if !ws.Signaled() || ws.Signal() != sig {
					t.Errorf("%v: status %s, want signal %v", sig, describe(ws), sig)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("%v: took %v to die", sig, d)
				}
				assertGone(t, p.Pid())
				if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
					t.Errorf("Signal after Wait: %v, want os.ErrProcessDone", err)
				}
			}
		})
	}
}

// TestParkProcReadOnly: a uid 0 program started by a parked helper finds
// /proc/sys and /proc/sysrq-trigger read-only, as one started by
// Launcher.Start does; other uids skip that (they cannot write there).
func TestParkProcReadOnly(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)
	const script = `for p in sys sysrq-trigger irq bus fs; do
	if grep -q " /proc/$p ro," /proc/self/mountinfo; then echo "$p ro"
	elif grep -q " /proc/$p " /proc/self/mountinfo; then echo "$p rw"
	else echo "$p none"; fi
done
if (echo written > /proc/sys/kernel/hostname) 2>/dev/null; then echo hostname written; else echo hostname refused; fi
if test -w /proc/sysrq-trigger; then echo sysrq writable; else echo sysrq refused; fi
cat /proc/sys/kernel/hostname
id -u
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status`
	for _, uid := range []uint32{0, nobody} {
		// uid 0 finds each of these read-only, where the kernel has it.
		want := ""
		for _, p := range []string{"sys", "sysrq-trigger", "irq", "bus", "fs"} {
			state := "none"
			if _, err := os.Stat("/proc/" + p); err == nil && uid == 0 {
				state = "ro"
			}
			want += p + " " + state + "\n"
		}
		want += "hostname refused\nsysrq refused\nsbx\n" + strconv.Itoa(int(uid)) + "\n"
		for _, parked := range []bool{true, false} {
			t.Run(fmt.Sprintf("uid=%d/parked=%v", uid, parked), func(t *testing.T) {
				cfg := sandboxConfig(root, "sh", "-c", script)
				cfg.UID, cfg.GID = uid, uid
				var out string
				var ws syscall.WaitStatus
				if parked {
					out, ws = runParked(t, parkT(t, l, root, allNS, nil), cfg)
				} else {
					out, ws = run(t, l, cfg)
				}
				wantExit(t, ws, 0)
				if !strings.HasPrefix(out, want) {
					t.Fatalf("output %q, want it to start with %q", out, want)
				}
				wantNoCapabilities(t, statusFields(strings.TrimPrefix(out, want)))
			})
		}
	}
}

// TestParkStartRefused: configs a parked helper cannot take come back
// with ErrNotParkable (or fs.ErrInvalid), and the helper stays parked for a
// config it can take; a parked helper starts once.
func TestParkStartRefused(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)
	pk := parkT(t, l, root, allNS, nil)
	null := devnull(t)

	refused := map[string]func(*Config){
		"privileged":      func(c *Config) { c.Privileged = true },
		"cgroup fd":       func(c *Config) { c.CgroupFD = 0 },
		"attach":          func(c *Config) { c.Attach = func(int) error { t.Error("Attach called"); return nil } },
		"buffer stdout":   func(c *Config) { c.Stdout = new(bytes.Buffer) },
		"buffer stderr":   func(c *Config) { c.Stdout, c.Stderr = null, new(bytes.Buffer) },
		"reader stdin":    func(c *Config) { c.Stdin = strings.NewReader("x") },
		"fewer flags":     func(c *Config) { c.Cloneflags = unix.CLONE_NEWNS },
		"more flags":      func(c *Config) { c.Cloneflags = allNS | unix.CLONE_NEWCGROUP },
		"net flag":        func(c *Config) { c.Cloneflags = allNS | unix.CLONE_NEWNET },
		"too many args":   func(c *Config) { c.Args = append([]string{"true"}, make([]string, 1100)...) },
		"too much env":    func(c *Config) { c.Env = append(c.Env, "BIG="+strings.Repeat("x", 64<<10)) },
		"many small envs": func(c *Config) { c.Env = append(c.Env, slices.Repeat([]string{"E=1"}, 1100)...) },
	}
	for name, edit := range refused {
		cfg := sandboxConfig(root, "true")
		edit(&cfg)
		p, err := pk.Start(context.Background(), cfg)
		if err == nil {
			p.Wait()
			t.Fatalf("%s: started", name)
		}
		if !errors.Is(err, ErrNotParkable) {
			t.Errorf("%s: error %v, want ErrNotParkable", name, err)
		}
		assertParked(t, pk.Pid())
	}
	invalid := map[string]func(*Config){
		"no args":       func(c *Config) { c.Args = nil },
		"empty program": func(c *Config) { c.Args = []string{""} },
		"user ns":       func(c *Config) { c.Cloneflags |= unix.CLONE_NEWUSER },
		"long hostname": func(c *Config) { c.Hostname = strings.Repeat("h", 65) },
		"nil procs":     func(c *Config) { c.CgroupProcs = []*os.File{nil} },
	}
	for name, edit := range invalid {
		cfg := sandboxConfig(root, "true")
		edit(&cfg)
		if _, err := pk.Start(context.Background(), cfg); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("%s: error %v, want fs.ErrInvalid", name, err)
		}
		assertParked(t, pk.Pid())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := pk.Start(ctx, sandboxConfig(root, "true")); !errors.Is(err, context.Canceled) {
		t.Errorf("done context: error %v, want context.Canceled", err)
	}
	assertParked(t, pk.Pid())

	// Still good for a config it can take, stdin from a pipe included.
	// Close then is a no-op: the program keeps running.
	inR, inW, err := os.Pipe()
	must(t, err)
	cfg := sandboxConfig(root, "sh", "-c", `read x; echo "got $x"; exit 4`)
	cfg.Stdin = inR
	p, out := startParked(t, pk, cfg)
	inR.Close()
	must(t, pk.Close())
	_, err = inW.Write([]byte("line\n"))
	must(t, err)
	inW.Close()
	ws, err := p.Wait()
	must(t, err)
	wantExit(t, ws, 4)
	if got := out(); got != "got line\n" {
		t.Errorf("stdout %q, want %q", got, "got line\n")
	}
	assertGone(t, p.Pid())

	// Once only.
	if _, err := pk.Start(context.Background(), sandboxConfig(root, "true")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Start: error %v, want os.ErrClosed", err)
	}
}

// TestParkLimits: the biggest start messages the Go side lets through
// arrive whole.
func TestParkLimits(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)

	// As many strings as allowed: the options (host, uid, gid, flags,
	// nogo, --), the arguments, the environment and the count.
	cfg := sandboxConfig("", "sh", "-c", `echo $# "$1" "${200}" "$LAST"`, "zero")
	cfg.Env = append(cfg.Env, "LAST=last")
	nopts := len(cfg.helperArgs(cfg.Cloneflags&^unix.CLONE_NEWNS, nil)) - 1 - len(cfg.Args)
	for i := 1; nopts+len(cfg.Args)+len(cfg.Env)+1 < maxParkedStrings; i++ {
		cfg.Args = append(cfg.Args, "a"+strconv.Itoa(i))
	}
	nargs := len(cfg.Args) - 4
	out, ws := runParked(t, parkT(t, l, root, allNS, nil), cfg)
	wantExit(t, ws, 0)
	if want := fmt.Sprintf("%d a1 a200 last\n", nargs); out != want {
		t.Errorf("at the string limit: output %q, want %q", out, want)
	}
	cfg.Args = append(cfg.Args, "one-too-many")
	if _, err := parkT(t, l, root, allNS, nil).Start(context.Background(), cfg); !errors.Is(err, ErrNotParkable) {
		t.Errorf("one string over: error %v, want ErrNotParkable", err)
	}

	// As many bytes as allowed, most of them in one variable.
	cfg = sandboxConfig("", "sh", "-c", `printf %s "$BIG" | wc -c; printf %s "$BIG" | tr -d x | wc -c`)
	n := 0
	for _, s := range cfg.helperArgs(cfg.Cloneflags&^unix.CLONE_NEWNS, nil)[1:] {
		n += len(s) + 1
	}
	for _, s := range cfg.Env {
		n += len(s) + 1
	}
	size := maxParkedBytes - 8 - n - len("BIG=") - 1
	cfg.Env = append(cfg.Env, "BIG="+strings.Repeat("x", size))
	out, ws = runParked(t, parkT(t, l, root, allNS, nil), cfg)
	wantExit(t, ws, 0)
	if want := fmt.Sprintf("%d\n0\n", size); out != want {
		t.Errorf("at the byte limit: output %q, want %q", out, want)
	}
	cfg.Env[len(cfg.Env)-1] += "x"
	pk := parkT(t, l, root, allNS, nil)
	if _, err := pk.Start(context.Background(), cfg); !errors.Is(err, ErrNotParkable) {
		t.Errorf("one byte over: error %v, want ErrNotParkable", err)
	}
	assertParked(t, pk.Pid())
}

// TestParkMissingProgram: a failed exec is a *StepError, and the helper is
// reaped.
func TestParkMissingProgram(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)
	for _, flags := range []uintptr{unix.CLONE_NEWNS, allNS} {
		for _, name := range []string{"nosuch", "/nosuch"} {
			pk := parkT(t, l, root, flags, nil)
			cfg := sandboxConfig(root, name)
			cfg.Cloneflags = flags
			p, err := pk.Start(context.Background(), cfg)
			cfg.Args = []string{"true"}
			if err == nil {
				p.Wait()
				t.Fatalf("flags %#x: %s started", flags, name)
			}
			var se *StepError
			if !errors.As(err, &se) || !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("flags %#x: error %v, want a *StepError matching fs.ErrNotExist", flags, err)
			}
			if want := fmt.Sprintf("sandbox init: exec %q: no such file or directory", name); err.Error() != want {
				t.Errorf("flags %#x: error %q, want %q", flags, err, want)
			}
			assertGone(t, pk.Pid())
			must(t, pk.Close())
			if _, err := pk.Start(context.Background(), cfg); !errors.Is(err, os.ErrClosed) {
				t.Errorf("Start after a failed Start: %v, want os.ErrClosed", err)
			}
		}
	}
}

// TestParkClose: Close kills and reaps a helper never started; Start
// after that, or on a helper that died while parked, fails.
func TestParkClose(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)

	pk := parkT(t, l, root, allNS, nil)
	assertParked(t, pk.Pid())
	must(t, pk.Close())
	assertGone(t, pk.Pid())
	must(t, pk.Close())
	if _, err := pk.Start(context.Background(), sandboxConfig(root, "true")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Start after Close: %v, want os.ErrClosed", err)
	}

	// Killed while parked: nothing to start, and Start reaps it.
	for _, flags := range []uintptr{allNS, unix.CLONE_NEWNS} {
		pk = parkT(t, l, root, flags, nil)
		must(t, unix.Kill(pk.Pid(), unix.SIGKILL))
		for i := 0; procState(pk.Pid()) != 'Z'; i++ {
			if i == 1000 {
				t.Fatalf("killed helper %d not a zombie after 2s (state %q)", pk.Pid(), procState(pk.Pid()))
			}
			time.Sleep(2 * time.Millisecond)
		}
		cfg := sandboxConfig(root, "true")
		cfg.Cloneflags = flags
		p, err := pk.Start(context.Background(), cfg)
		if err == nil {
			ws, _ := p.Wait()
			t.Fatalf("flags %#x: killed helper started (status %s)", flags, describe(ws))
		}
		if !errors.Is(err, ErrNotParkable) {
			t.Errorf("flags %#x: killed helper: error %v, want ErrNotParkable", flags, err)
		}
		assertGone(t, pk.Pid())
		must(t, pk.Close())
	}

	// Killed just before Start: the message may reach the dying helper's
	// queue. Then, as with a helper killed before its exec in
	// Launcher.Start, Start succeeds and Wait reports the kill.
	for range 20 {
		pk = parkT(t, l, root, allNS, nil)
		must(t, unix.Kill(pk.Pid(), unix.SIGKILL))
		p, err := pk.Start(context.Background(), sandboxConfig(root, "true"))
		if err == nil {
			ws, err := p.Wait()
			if err != nil || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Errorf("killed helper started: %s, %v; want killed", describe(ws), err)
			}
		} else if !errors.Is(err, ErrNotParkable) {
			t.Errorf("killed helper: error %v, want ErrNotParkable", err)
		}
		assertGone(t, pk.Pid())
	}

	// A closed stdio file cannot be sent: an error, and no process left
	// (the helper is spent).
	closed := devnull(t)
	closed.Close()
	pk = parkT(t, l, root, allNS, nil)
	cfg := sandboxConfig(root, "true")
	cfg.Stdout = closed
	if p, err := pk.Start(context.Background(), cfg); err == nil {
		p.Wait()
		t.Errorf("started with a closed stdout")
	}

	// With its stdio given, a parked helper no longer needs the launcher.
	l2 := newLauncher(t)
	pk = parkT(t, l2, root, allNS, nil)
	must(t, l2.Close())
	if _, err := l2.Park(context.Background(), root, allNS, false, nil); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Park after Launcher.Close: %v, want os.ErrClosed", err)
	}
	cfg = sandboxConfig(root, "sh", "-c", "echo ok")
	cfg.Stdin = devnull(t)
	out, ws := runParked(t, pk, cfg)
	wantExit(t, ws, 0)
	if out != "ok\n" {
		t.Errorf("stdout %q, want %q", out, "ok\n")
	}
}

func devnull(tb testing.TB) *os.File {
	tb.Helper()
	f, err := os.Open(os.DevNull)
	must(tb, err)
	tb.Cleanup(func() { f.Close() })
	return f
}

// TestParkAfterLauncherClose: a helper parked before Launcher.Close and
// started after it with nil stdio still starts: it has a /dev/null of its
// own, not the Launcher's, which Launcher.Close closes.
func TestParkAfterLauncherClose(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)
	pk := parkT(t, l, root, allNS, nil)
	must(t, l.Close())
	p, err := pk.Start(context.Background(), sandboxConfig(root, "true"))
	if err != nil {
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Start after Launcher.Close: %v, want success or os.ErrClosed", err)
		}
		return
	}
	ws, err := p.Wait()
	must(t, err)
	wantExit(t, ws, 0)
}

// TestParkRefused: Park checks its arguments and reports the step that
// failed in the helper, leaving no process and no mount behind.
func TestParkRefused(t *testing.T) {
	testutil.RequiresRoot(t)
	checkNoLeaks(t)
	cases, notMount, dir := badRoots(t)
	l := newLauncher(t)
	before := mountPoints(t)
	children := childPids(t)
	for _, c := range cases {
		pk, err := l.Park(context.Background(), c.root, allNS, false, nil)
		if err == nil {
			pk.Close()
			t.Fatalf("root %s: parked", c.root)
		}
		var se *StepError
		if !errors.As(err, &se) || se.Step != c.step || !errors.Is(err, c.errno) {
			t.Errorf("root %s: error %q, want step %q failing with %v", c.root, err, c.step, c.errno)
		}
		if now := childPids(t); !slices.Equal(now, children) {
			t.Errorf("root %s: children %v after a failed Park, want %v", c.root, now, children)
		}
	}

	for name, c := range map[string]struct {
		root  string
		flags uintptr
		want  error
	}{
		"no root":          {"", allNS, ErrNotParkable},
		"net namespace":    {notMount, allNS | unix.CLONE_NEWNET, ErrNotParkable},
		"no mount ns":      {notMount, unix.CLONE_NEWPID, fs.ErrInvalid},
		"user namespace":   {notMount, allNS | unix.CLONE_NEWUSER, fs.ErrInvalid},
		"no mount ns/root": {"", 0, ErrNotParkable},
	} {
		if pk, err := l.Park(context.Background(), c.root, c.flags, false, nil); !errors.Is(err, c.want) {
			if err == nil {
				pk.Close()
			}
			t.Errorf("%s: error %v, want %v", name, err, c.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if pk, err := l.Park(ctx, notMount, allNS, false, nil); !errors.Is(err, context.Canceled) {
		if err == nil {
			pk.Close()
		}
		t.Errorf("done context: error %v, want context.Canceled", err)
	}
	if now := childPids(t); !slices.Equal(now, children) {
		t.Errorf("children %v after failed Parks, want %v", now, children)
	}
	if after := mountPoints(t); !slices.Equal(before, after) {
		t.Errorf("host mount table changed:\nbefore %v\nafter  %v", before, after)
	}
	if leaked := testutil.MountsUnder(dir); len(leaked) != 2 {
		t.Errorf("mounts under %s: %v, want only the test's two tmpfs", dir, leaked)
	}
}

// TestParkMountSnapshot: the helper's mounts are those of Park's time;
// files are shared, mounts made under the root afterwards are not.
func TestParkMountSnapshot(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)
	pk := parkT(t, l, root, allNS, nil)
	late := filepath.Join(root, "etc", "late")
	must(t, os.Mkdir(late, 0o755))
	must(t, unix.Mount("tmpfs", late, "tmpfs", 0, "size=1m"))
	defer func() { must(t, unix.Unmount(late, unix.MNT_DETACH)) }()
	must(t, os.WriteFile(filepath.Join(late, "hidden"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc", "shared"), nil, 0o644))
	out, ws := runParked(t, pk, sandboxConfig(root, "ls", "-a", "/etc", "/etc/late"))
	wantExit(t, ws, 0)
	if want := "/etc:\n.\n..\nlate\nshared\n\n/etc/late:\n.\n..\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

// TestParkCgroupProcs: a helper parked with cgroup.procs files is in
// those cgroups before Start, and its program too; a Start with its own
// files moves both.
func TestParkCgroupProcs(t *testing.T) {
	testutil.RequiresRoot(t)
	const mnt = "/sys/fs/cgroup/pids"
	var st unix.Statfs_t
	if unix.Statfs(mnt, &st) != nil || st.Type != unix.CGROUP_SUPER_MAGIC {
		t.Skip("no cgroup v1 pids hierarchy at " + mnt)
	}
	name := testutil.UniqueName(t)
	cgroup := func(name string) (dir string, procs *os.File) {
		dir = filepath.Join(mnt, name)
		must(t, os.Mkdir(dir, 0o755))
		t.Cleanup(func() {
			if err := os.Remove(dir); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		})
		f, err := os.OpenFile(filepath.Join(dir, "cgroup.procs"), os.O_WRONLY, 0)
		must(t, err)
		t.Cleanup(func() { f.Close() })
		return dir, f
	}
	parkDir, parkProcs := cgroup(name)
	startDir, startProcs := cgroup(name + "-start")
	members := func(dir string) []string {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		must(t, err)
		return strings.Fields(string(b))
	}

	root := minimalRoot(t) // after the cgroups: its cleanup runs first
	checkNoLeaks(t)
	l := newLauncher(t)
	pk := parkT(t, l, root, allNS, []*os.File{parkProcs})
	if got := members(parkDir); len(got) != 2 || !slices.Contains(got, strconv.Itoa(pk.Pid())) {
		t.Errorf("parked: %s has %v, want the helper %d and its PID 2", parkDir, got, pk.Pid())
	}
	out, ws := runParked(t, pk, sandboxConfig(root, "grep", "pids", "/proc/self/cgroup"))
	wantExit(t, ws, 0)
	if want := ":pids:/" + name + "\n"; strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, want) {
		t.Errorf("program's cgroups %q, want %q", out, want)
	}
	if got := members(parkDir); len(got) > 0 {
		t.Errorf("after Wait, %s still has %v", parkDir, got)
	}

	// Cgroups are Park's: Start refuses files of its own, and the helper
	// stays parked.
	pk = parkT(t, l, root, allNS, []*os.File{parkProcs})
	cfg := sandboxConfig(root, "true")
	cfg.CgroupProcs = []*os.File{startProcs}
	if _, err := pk.Start(context.Background(), cfg); !errors.Is(err, ErrNotParkable) {
		t.Errorf("Start with CgroupProcs: %v, want ErrNotParkable", err)
	}
	assertParked(t, pk.Pid())
	must(t, pk.Close())
	_ = startDir
	// The caller keeps its files.
	if _, err := parkProcs.Stat(); err != nil {
		t.Errorf("cgroup.procs file closed: %v", err)
	}

	// A file the helper cannot write fails the Park at that step.
	ro, err := os.Open(parkProcs.Name())
	must(t, err)
	defer ro.Close()
	_, err = l.Park(context.Background(), root, allNS, false, []*os.File{ro})
	var se *StepError
	if !errors.As(err, &se) || se.Step != "join cgroup" || !errors.Is(err, unix.EBADF) {
		t.Errorf("read-only cgroup.procs: error %v, want step %q failing with EBADF", err, "join cgroup")
	}
}

// TestParkConcurrent parks and starts helpers from several goroutines, and
// races Start against Close on one helper: whichever wins, nothing leaks.
func TestParkConcurrent(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			pk, err := l.Park(context.Background(), root, allNS, false, nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer pk.Close()
			r, w, err := os.Pipe()
			if err != nil {
				t.Error(err)
				return
			}
			defer r.Close()
			cfg := sandboxConfig(root, "sh", "-c", fmt.Sprintf("echo %d; exit %d", i, i))
			cfg.Stdout = w
			p, err := pk.Start(context.Background(), cfg)
			w.Close()
			if err != nil {
				t.Error(err)
				return
			}
			out, _ := io.ReadAll(r)
			ws, err := p.Wait()
			if err != nil || !ws.Exited() || ws.ExitStatus() != i || string(out) != fmt.Sprintf("%d\n", i) {
				t.Errorf("run %d: %s, %v, stdout %q", i, describe(ws), err, out)
			}
		})
	}
	for range 8 {
		pk, err := l.Park(context.Background(), root, allNS, false, nil)
		must(t, err)
		wg.Go(func() {
			if err := pk.Close(); err != nil {
				t.Error(err)
			}
		})
		p, err := pk.Start(context.Background(), sandboxConfig(root, "true"))
		if err == nil {
			ws, err := p.Wait()
			if err != nil || ws != 0 {
				t.Errorf("Start won the race: %s, %v", describe(ws), err)
			}
		} else if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Start lost the race: %v, want os.ErrClosed", err)
		}
		wg.Wait()
		assertGone(t, pk.Pid())
	}
	wg.Wait()
}

// TestParkNULBytes: strings with a NUL byte cannot be passed to a program;
// both Launcher.Start and Parked.Start refuse them up front, rather than
// the start message splitting them into two strings (an argument becoming
// an environment variable or an option).
func TestParkNULBytes(t *testing.T) {
	root := minimalRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)
	stdin := filepath.Join(testutil.StateDir(t), "stdin")
	for name, edit := range map[string]func(*Config){
		"argument": func(c *Config) { c.Args = []string{"sh", "-c", `echo "$1"; env`, "zero", "a\x00b", "LD_PRELOAD=x"} },
		"env":      func(c *Config) { c.Env = []string{testEnv, "A=1\x00B=2"} },
		"hostname": func(c *Config) { c.Hostname = "a\x00b" },
		"dir":      func(c *Config) { c.Dir = "/tmp\x00uid=0" },
	} {
		cfg := sandboxConfig(root, "env")
		edit(&cfg)
		if p, err := l.Start(context.Background(), cfg); err == nil {
			p.Wait()
			t.Fatalf("%s: Launcher.Start took a NUL byte", name)
		}
		must(t, os.WriteFile(stdin, []byte("mine"), 0o600))
		f, err := os.OpenFile(stdin, os.O_RDWR, 0)
		must(t, err)
		cfg.Stdin = f
		r, w, err := os.Pipe()
		must(t, err)
		cfg.Stdout = w
		p, err := parkT(t, l, root, allNS, nil).Start(context.Background(), cfg)
		f.Close()
		w.Close()
		if err == nil {
			ws, err := p.Wait()
			out, _ := io.ReadAll(r)
			t.Errorf("%s: Parked.Start took a NUL byte; the program ran: status %s (%v), stdout %q", name, describe(ws), err, out)
		}
		r.Close()
		if b, _ := os.ReadFile(stdin); string(b) != "mine" {
			t.Errorf("%s: the helper wrote %q into the program's stdin file", name, b)
		}
	}
}
