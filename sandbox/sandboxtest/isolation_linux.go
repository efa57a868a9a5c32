package sandboxtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
)

// dataDir makes a host directory holding a file "marker" that the default
// user can read through a bind, and returns it with the marker's content.
func dataDir(t *testing.T) (dir, marker string) {
	t.Helper()
	dir = t.TempDir()
	marker = testutil.UniqueName(t) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "marker"), []byte(marker), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, marker
}

// rootEntries lists the top-level entries of the sandbox's root as
// "name count" lines, count being the number of entries in a directory,
// "-" for anything else and "unreadable" when the directory cannot be listed.
const rootEntries = `
cd / || exit 11
for e in * .[!.]*; do
	[ -e "$e" ] || [ -L "$e" ] || continue
	if [ -d "$e" ] && [ ! -L "$e" ]; then
		if listing=$(ls -A "$e" 2>/dev/null); then
			echo "entry $e $(printf '%s' "$listing" | grep -c .)"
		else
			echo "entry $e unreadable"
		fi
	else
		echo "entry $e -"
	fi
done
`

// inRoot says whether a top-level name belongs in a root made from the
// default host base with one bind at /data.
func inRoot(name string) bool {
	switch name {
	case "bin", "sbin", "usr", "etc", "data", "scratch", "tmp", "dev", "proc":
		return true
	}
	return strings.HasPrefix(name, "lib") // the host base brings /lib*
}

// 1. A process sees its binds and the base, and nothing else of the host.
func checkSeesOnlyItsBinds(t *testing.T, h *harness) {
	data, marker := dataDir(t)
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "secret")
	if err := os.WriteFile(secret, []byte("host only\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Paths the host has and the root must not: the check's own files, the
	// places a careless root would expose, and host-only device nodes.
	var hidden []string
	for _, p := range []string{
		secret, secretDir, "/root", "/work", "/etc/shadow", "/home", "/var/lib",
		"/run", "/sys/fs/cgroup", "/dev/kmsg", "/dev/mem", "/dev/vda", "/dev/sda", "/dev/kvm", "/dev/loop0",
	} {
		if hostExists(p) {
			hidden = append(hidden, p)
		}
	}
	spec := sandbox.Spec{Root: fsbind.Spec{Binds: []fsbind.Bind{{Source: data, Dest: "/data"}}}}
	// Run as uid 0: without capabilities it still passes the owner checks
	// on the host's root-owned directories, so a path it cannot see is
	// really absent, not just unreadable.
	r := h.runOnce(t, spec, asUser(sh(`
cat /data/marker || exit 10
for p in "$@"; do
	if [ -e "$p" ] || [ -L "$p" ]; then echo "visible $p"; fi
done
`+rootEntries, hidden...), root))
	mustSucceed(t, "reading the bind and probing host paths", r)

	if !strings.HasPrefix(r.stdout, marker) {
		t.Errorf("cat /data/marker: want %q, got %s", marker, r)
	}
	for _, line := range r.lines() {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "visible":
			t.Errorf("host path %s is visible in the sandbox", f[1])
		case len(f) == 3 && f[0] == "entry" && !inRoot(f[1]) && f[2] != "0":
			// An empty directory (a mount point left by pivot_root, say)
			// exposes nothing; anything else is the host leaking in.
			t.Errorf("unexpected /%s in the sandbox root (entries: %s)", f[1], f[2])
		}
	}
	if !strings.Contains(r.stdout, "entry data ") || !strings.Contains(r.stdout, "entry usr ") {
		t.Errorf("root listing lacks /data or /usr: %s", r)
	}
}

// 2. The base and read-only binds refuse writes, even from uid 0 (EROFS,
// not just EACCES); the writable bind, /scratch and /tmp accept them.
func checkReadOnlyBase(t *testing.T, h *harness) {
	data, marker := dataDir(t)
	out := t.TempDir()
	if err := os.Chmod(out, 0o777); err != nil {
		t.Fatal(err)
	}
	spec := sandbox.Spec{Root: fsbind.Spec{Binds: []fsbind.Bind{
		{Source: data, Dest: "/data"},
		{Source: out, Dest: "/out", Writable: true},
	}}}

	probe := testutil.UniqueName(t)
	// Inside path -> where it would land on the host if the mount leaked.
	targets := map[string]string{
		"/" + probe:           "/" + probe,
		"/usr/" + probe:       "/usr/" + probe,
		"/etc/" + probe:       "/etc/" + probe,
		"/bin/" + probe:       "/usr/bin/" + probe,
		"/lib/" + probe:       "/usr/lib/" + probe,
		"/data/" + probe:      filepath.Join(data, probe),
		"mkdir:/usr/" + probe: "/usr/" + probe,
		"mkdir:/" + probe:     "/" + probe,
		"/usr/bin/env":        "", // existing files, opened for writing
		"/data/marker":        "",
	}
	for _, hostPath := range targets {
		if hostPath != "" {
			t.Cleanup(func() { _ = os.Remove(hostPath) })
		}
	}
	// Prints "<target> <errno name or ok>" per target. Existing files are
	// opened without O_TRUNC, so even a wrongly writable mount loses nothing.
	const tryWrite = `
import errno, os, sys
for target in sys.argv[1:]:
    path = target.removeprefix("mkdir:")
    try:
        if target.startswith("mkdir:"):
            os.mkdir(path)
        elif os.path.lexists(path):
            os.close(os.open(path, os.O_WRONLY))
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except OSError as e:
        print(target, errno.errorcode.get(e.errno, e.errno))
    else:
        print(target, "ok")
`
	args := make([]string, 0, len(targets))
	for in := range targets {
		args = append(args, in)
	}
	slices.Sort(args)
	for _, u := range []sandbox.User{sandbox.DefaultUser, root} {
		r := h.runOnce(t, spec, asUser(python(tryWrite, args...), u))
		mustSucceed(t, "write probes as uid "+strconv.Itoa(int(u.UID)), r)
		got := map[string]string{}
		for _, line := range r.lines() {
			if target, outcome, ok := strings.Cut(line, " "); ok {
				got[target] = outcome
			}
		}
		for _, target := range args {
			switch outcome := got[target]; {
			case outcome == "":
				t.Errorf("uid %d: no outcome for %s: %s", u.UID, target, r)
			case outcome == "ok":
				t.Errorf("uid %d: writing %s succeeded in the read-only part of the root", u.UID, target)
			case u.UID == 0 && outcome != "EROFS":
				t.Errorf("uid 0: writing %s failed with %s, want EROFS (a read-only mount, not just permissions)", target, outcome)
			}
		}
	}
	for _, hostPath := range targets {
		if hostPath != "" && hostExists(hostPath) {
			t.Errorf("a write in the sandbox created %s on the host", hostPath)
		}
	}
	if b, err := os.ReadFile(filepath.Join(data, "marker")); err != nil || string(b) != marker {
		t.Errorf("host marker changed: %q, %v", b, err)
	}

	r := h.runOnce(t, spec, sh(`
set -e
for d in /out /scratch /tmp; do
	echo "written to $d" > "$d/probe"
	mkdir "$d/dir"
	cat "$d/probe"
done
`))
	mustSucceed(t, "default user writing /out, /scratch and /tmp", r)
	if want := "written to /out\nwritten to /scratch\nwritten to /tmp\n"; r.stdout != want {
		t.Errorf("writable places: want %q, got %s", want, r)
	}
	fi, err := os.Stat(filepath.Join(out, "probe"))
	if err != nil {
		t.Fatalf("file written to the writable bind is not on the host: %v", err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != sandbox.DefaultUser.UID {
		t.Errorf("file written by the default user is owned by uid %d on the host, want %d", uid, sandbox.DefaultUser.UID)
	}
}

// 3. A process sees and signals only its own sandbox's processes: not the
// host's, not another sandbox's.
func checkOwnProcesses(t *testing.T, h *harness) {
	// The host process runs as the sandbox's default user, so only PID
	// isolation, not permissions, can keep kill -0 from reaching it.
	host := exec.Command("/bin/sleep", "30")
	host.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: sandbox.DefaultUser.UID, Gid: sandbox.DefaultUser.GID, NoSetGroups: true,
	}}
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = host.Process.Kill()
		_ = host.Wait()
	})
	neighbour := start(t, h.create(t, sandbox.Spec{}), sandbox.ProcessSpec{Args: []string{"/bin/sleep", "30"}})

	hostPid, neighbourPid := strconv.Itoa(host.Process.Pid), strconv.Itoa(neighbour.Pid())
	r := h.runOnce(t, sandbox.Spec{}, sh(`
ls /proc
for p in "$@"; do
	if kill -0 "$p" 2>/dev/null; then echo "signallable $p"; fi
	if [ -e "/proc/$p" ]; then echo "listed $p"; fi
done
`, hostPid, neighbourPid))
	mustSucceed(t, "listing /proc", r)
	var pids []string
	for _, line := range r.lines() {
		if _, err := strconv.Atoi(line); err == nil {
			pids = append(pids, line)
		} else if strings.HasPrefix(line, "signallable ") || strings.HasPrefix(line, "listed ") {
			t.Errorf("outside process visible from the sandbox: %s (host sleep %s, other sandbox's sleep %s)", line, hostPid, neighbourPid)
		}
	}
	// sh and ls, and perhaps the backend's init.
	if len(pids) == 0 || len(pids) > 3 {
		t.Errorf("/proc in the sandbox lists pids %v, want 1 to 3 (its own processes only)", pids)
	}
	if slices.Contains(pids, hostPid) || slices.Contains(pids, neighbourPid) {
		t.Errorf("/proc in the sandbox lists an outside pid: %v", pids)
	}
}

// 4. The sandbox has its own hostname: Spec.Hostname, else its ID; the
// host's does not change.
func checkOwnHostname(t *testing.T, h *harness) {
	before, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	hostname := sandbox.ProcessSpec{Args: []string{"/bin/hostname"}}
	r := h.runOnce(t, sandbox.Spec{Hostname: "sbx-test"}, hostname)
	mustSucceed(t, "hostname", r)
	if r.stdout != "sbx-test\n" {
		t.Errorf("hostname with Spec.Hostname sbx-test: got %s", r)
	}
	sb := h.create(t, sandbox.Spec{})
	r = run(t, sb, hostname)
	mustSucceed(t, "hostname", r)
	if r.stdout != sb.ID()+"\n" {
		t.Errorf("default hostname: want the sandbox ID %q, got %s", sb.ID(), r)
	}
	if after, err := os.Hostname(); err != nil || after != before {
		t.Errorf("host hostname changed from %q to %q (%v)", before, after, err)
	}
}

// 5. The default user is nobody with no capabilities and no_new_privs;
// uid 0 gets no capabilities either.
func checkUnprivileged(t *testing.T, h *harness) {
	const probe = `/usr/bin/id -u; /usr/bin/id -G; cat /proc/self/status`
	for _, c := range []struct {
		name        string
		user        *sandbox.User
		uid, groups string // groups "" is not checked
	}{
		{"default user", nil, "65534", "65534"},
		{"uid 0", &root, "0", ""},
	} {
		p := sh(probe)
		p.User = c.user
		r := h.runOnce(t, sandbox.Spec{}, p)
		mustSucceed(t, "id and /proc/self/status", r)
		lines := r.lines()
		if len(lines) < 2 || lines[0] != c.uid || (c.groups != "" && lines[1] != c.groups) {
			t.Errorf("%s: want uid %s and groups %q, got %s", c.name, c.uid, c.groups, r)
		}
		status := map[string]string{}
		for _, line := range lines {
			if k, v, ok := strings.Cut(line, ":"); ok {
				status[k] = strings.TrimSpace(v)
			}
		}
		for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapAmb"} {
			if status[k] != "0000000000000000" {
				t.Errorf("%s: %s = %q, want no capabilities", c.name, k, status[k])
			}
		}
		if status["NoNewPrivs"] != "1" {
			t.Errorf("%s: NoNewPrivs = %q, want 1", c.name, status["NoNewPrivs"])
		}
	}
}

// Without capabilities uid 0 still owns the host's root-owned files, and
// /proc/sys holds host-wide kernel settings: it must not be writable from a
// sandbox. The probe writes back the current value, so even a backend that
// fails this check changes nothing.
func checkProcSysReadOnly(t *testing.T, h *harness) {
	r := h.runOnce(t, sandbox.Spec{}, asUser(sh(`
v=$(cat /proc/sys/vm/swappiness) || exit 10
if { echo "$v" > /proc/sys/vm/swappiness; } 2>/dev/null; then echo writable; fi
`), root))
	mustSucceed(t, "probing /proc/sys as uid 0", r)
	if strings.Contains(r.stdout, "writable") {
		t.Errorf("uid 0 in the sandbox can write the host-wide setting /proc/sys/vm/swappiness")
	}
}

// checkNoInheritedFDs: a descriptor the host process holds without
// close-on-exec (as a shell redirection or a supervisor would leave it) does
// not reach the sandbox: an open directory there is a way out of the root.
func checkNoInheritedFDs(t *testing.T, h *harness) {
	fd, err := syscall.Open("/", syscall.O_RDONLY|syscall.O_DIRECTORY, 0) // deliberately no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	r := h.runOnce(t, sandbox.Spec{}, sh(`for f in /proc/self/fd/*; do echo "${f##*/}"; done`))
	mustSucceed(t, "list descriptors", r)
	for _, line := range r.lines() {
		switch line {
		case "0", "1", "2", "3": // stdio, and the shell's own handle on the directory it lists
		default:
			t.Fatalf("the sandbox holds descriptor %s (the host's non-close-on-exec fd was %d): %v", line, fd, r.lines())
		}
	}
}
