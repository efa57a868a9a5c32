//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/internal/mountinfo"
	"github.com/sockfaas/sockfaas/invoker/natsgw"
	"github.com/sockfaas/sockfaas/sandbox/cgpool"
)

// doctorCmd checks the host for what sockfaas needs. It only reads: every
// fix, even an optional tuning, is printed for a person to decide on.
type doctorCmd struct {
	Python    string `help:"The interpreter the zygotes run." default:"/usr/bin/python3"`
	Gateway   string `help:"Also check the NATS servers of 'sockfaas run --gateway nats://...': that they answer, with JetStream." env:"SOCKFAAS_GATEWAY" placeholder:"URL"`
	NatsCreds string `help:"The NATS credentials file 'sockfaas run' uses (--nats-creds)." env:"SOCKFAAS_NATS_CREDS" type:"path" placeholder:"FILE"`
}

type checkLevel int

const (
	levelOK checkLevel = iota
	levelWarn
	levelFail
)

func (l checkLevel) String() string {
	return [...]string{"ok", "warn", "FAIL"}[l]
}

// checkResult is one line of the report, with how to fix it unless ok.
type checkResult struct {
	level checkLevel
	what  string
	fix   string
}

func (c *doctorCmd) Run(ctx context.Context, g *globals) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var results []checkResult
	add := func(r ...checkResult) { results = append(results, r...) }
	add(checkRoot())
	add(checkKernel())
	add(checkCgroups(g.Cgroup)...)
	add(checkIptables(ctx))
	add(checkPython(ctx, c.Python)...)
	add(checkStateDir(g.StateDir))
	add(checkIPForward())
	add(checkGateway(ctx, c.Gateway, c.NatsCreds)...)

	fails, warns := 0, 0
	for _, r := range results {
		fmt.Printf("%-4s  %s\n", r.level, r.what)
		if r.fix != "" {
			for _, line := range strings.Split(r.fix, "\n") {
				fmt.Printf("      %s\n", line)
			}
		}
		switch r.level {
		case levelFail:
			fails++
		case levelWarn:
			warns++
		}
	}
	fmt.Println()
	switch {
	case fails > 0:
		fmt.Printf("%d problem%s to fix before `sockfaas run` works, %d warning%s\n", fails, plural(fails), warns, plural(warns))
		return exitCode(1)
	case warns > 0:
		fmt.Printf("ready for `sockfaas run`, with %d warning%s\n", warns, plural(warns))
	default:
		fmt.Println("ready for `sockfaas run`")
	}
	return nil
}

func checkRoot() checkResult {
	if os.Geteuid() == 0 {
		return checkResult{level: levelOK, what: "running as root"}
	}
	return checkResult{level: levelFail, what: fmt.Sprintf("running as uid %d, not root", os.Geteuid()),
		fix: "sockfaas mounts, makes cgroups and namespaces: run it as root (sudo sockfaas ...)"}
}

// minKernel is the first kernel with open_tree, move_mount (5.2) and
// mount_setattr (5.12), which fsbind builds roots with.
var minKernel = [2]int{5, 12}

func checkKernel() checkResult {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return checkResult{level: levelFail, what: "kernel version unknown: " + err.Error()}
	}
	release := unix.ByteSliceToString(u.Release[:])
	major, minor, ok := kernelVersion(release)
	if !ok {
		return checkResult{level: levelWarn, what: "kernel " + release + ": cannot tell its version",
			fix: fmt.Sprintf("sockfaas needs Linux %d.%d or later (open_tree, move_mount, mount_setattr)", minKernel[0], minKernel[1])}
	}
	if major > minKernel[0] || major == minKernel[0] && minor >= minKernel[1] {
		return checkResult{level: levelOK, what: fmt.Sprintf("kernel %s (>= %d.%d: open_tree, move_mount, mount_setattr)", release, minKernel[0], minKernel[1])}
	}
	return checkResult{level: levelFail, what: fmt.Sprintf("kernel %s is older than %d.%d (no mount_setattr)", release, minKernel[0], minKernel[1]),
		fix: "upgrade the kernel: Debian 12 ships 6.1, Ubuntu 22.04 ships 5.15"}
}

// kernelVersion reads "6.1.0-18-amd64" as 6, 1.
func kernelVersion(release string) (major, minor int, ok bool) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	digits := func(s string) string {
		i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
		if i < 0 {
			return s
		}
		return s[:i]
	}
	major, err1 := strconv.Atoi(digits(parts[0]))
	minor, err2 := strconv.Atoi(digits(parts[1]))
	return major, minor, err1 == nil && err2 == nil
}

// checkCgroups reports the layout, the controllers sockfaas can use under
// the parent of cgroup, and the cgroup2 mount's favordynmods option.
func checkCgroups(cgroup string) []checkResult {
	layout, err := cgpool.Detect()
	if err != nil {
		return []checkResult{{level: levelFail, what: "cgroups: " + err.Error(),
			fix: "mount cgroup2 on /sys/fs/cgroup (systemd does it at boot), or the v1 memory, cpu, pids and freezer hierarchies"}}
	}
	mounts, _ := mountinfo.Read()
	var unified *mountinfo.Entry
	for i, m := range mounts {
		if m.FSType == "cgroup2" && (unified == nil || m.Point == layout.Unified) {
			unified = &mounts[i]
		}
	}
	var out []checkResult
	desc := "cgroup v2 (unified) at " + layout.Unified
	if layout.Version == cgpool.V1 {
		desc = "cgroup v1"
		if unified != nil {
			desc = "cgroup v1 with a cgroup2 mount at " + unified.Point + " (hybrid)"
		}
	}
	out = append(out, checkResult{level: levelOK, what: "cgroup layout: " + desc})

	// Which controllers sockfaas can use; memory and pids are what a
	// sandbox's limits need, cpu and freezer are nice to have.
	required := map[string]bool{"memory": true, "pids": true}
	var missing []checkResult
	var usable []string
	if layout.Version == cgpool.V2 {
		parent := path.Dir(cgroup)
		dir, err := layout.Path("", parent)
		if err != nil {
			return append(out, checkResult{level: levelFail, what: "cgroup " + cgroup + ": " + err.Error(),
				fix: "pass --cgroup with an absolute path inside " + layout.UnifiedRoot})
		}
		available := readFields(filepath.Join(dir, "cgroup.controllers"))
		enabled := readFields(filepath.Join(dir, "cgroup.subtree_control"))
		for _, ctl := range []string{"memory", "cpu", "pids"} {
			switch {
			case slices.Contains(enabled, ctl):
				usable = append(usable, ctl)
			case slices.Contains(available, ctl):
				usable = append(usable, ctl+" (sockfaas enables it in "+parent+")")
			default:
				lvl := levelWarn
				if required[ctl] {
					lvl = levelFail
				}
				missing = append(missing, checkResult{level: lvl, what: fmt.Sprintf("cgroup v2 controller %s is not offered to %s", ctl, parent),
					fix: fmt.Sprintf("enable it in every ancestor's cgroup.subtree_control, e.g. echo +%s > %s\n(under systemd: Delegate=yes on the unit that runs sockfaas)", ctl, filepath.Join(filepath.Dir(dir), "cgroup.subtree_control"))})
			}
		}
		usable = append(usable, "freezer (cgroup.freeze)")
	} else {
		for _, ctl := range []string{"memory", "cpu", "pids", "freezer"} {
			if _, ok := layout.Mounts[ctl]; ok {
				usable = append(usable, ctl)
				continue
			}
			lvl := levelWarn
			if required[ctl] {
				lvl = levelFail
			}
			missing = append(missing, checkResult{level: lvl, what: "cgroup v1 controller " + ctl + " is not mounted",
				fix: fmt.Sprintf("mkdir -p /sys/fs/cgroup/%s && mount -t cgroup -o %s cgroup /sys/fs/cgroup/%s", ctl, ctl, ctl)})
		}
	}
	if len(usable) > 0 {
		out = append(out, checkResult{level: levelOK, what: "cgroup controllers usable: " + strings.Join(usable, ", ")})
	}
	out = append(out, missing...)

	if unified != nil {
		opts := strings.Split(unified.SuperOptions, ",")
		if slices.Contains(opts, "favordynmods") {
			out = append(out, checkResult{level: levelOK, what: "cgroup2 mount " + unified.Point + " has favordynmods"})
		} else {
			out = append(out, checkResult{level: levelWarn,
				what: "cgroup2 mount " + unified.Point + " lacks favordynmods: moving a process into a cgroup waits for an RCU grace period, which under load adds milliseconds to cold starts",
				fix: "optional, host-wide tuning (sockfaas never changes it; Linux 6.0 or later):\n" +
					"  mount -o remount,favordynmods " + unified.Point + "\n" +
					"it makes fork and exit a little slower everywhere in exchange; it lasts until the next boot"})
		}
	}
	return out
}

// readFields reads a space-separated cgroup file; nil when unreadable.
func readFields(p string) []string {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	return strings.Fields(string(data))
}

func checkIptables(ctx context.Context) checkResult {
	bin, err := exec.LookPath("iptables")
	if err != nil {
		return checkResult{level: levelFail, what: "iptables not found",
			fix: "apt-get install iptables (or make setup); without it only `sockfaas run --no-network` works"}
	}
	out, err := exec.CommandContext(ctx, bin, "-t", "nat", "-L", "-n").CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		return checkResult{level: levelFail, what: fmt.Sprintf("iptables -t nat -L -n fails: %v: %s", err, msg),
			fix: "load the nat table (modprobe iptable_nat), or pick the backend that works: update-alternatives --config iptables;\nwithout it only `sockfaas run --no-network` works"}
	}
	version, _ := exec.CommandContext(ctx, bin, "--version").Output()
	return checkResult{level: levelOK, what: "iptables works (" + strings.TrimSpace(string(version)) + ")"}
}

func checkPython(ctx context.Context, python string) []checkResult {
	out, err := exec.CommandContext(ctx, python, "--version").CombinedOutput()
	if err != nil {
		return []checkResult{{level: levelFail, what: python + " not usable: " + err.Error(),
			fix: "apt-get install python3 (or make setup): the zygotes and handlers run on it"}}
	}
	res := []checkResult{{level: levelOK, what: python + ": " + strings.TrimSpace(string(out))}}
	// -I and "/" as the working directory: a numpy.py lying around where
	// doctor runs (as root) must not be what gets imported.
	probe := exec.CommandContext(ctx, python, "-I", "-c", "import numpy; print(numpy.__version__)")
	probe.Dir = "/"
	ver, err := probe.CombinedOutput()
	if err != nil {
		res = append(res, checkResult{level: levelWarn, what: "numpy is not importable by " + python + " (only the numpy example needs it)",
			fix: "apt-get install python3-numpy (or make setup)"})
	} else {
		res = append(res, checkResult{level: levelOK, what: "numpy " + string(bytes.TrimSpace(ver)) + " importable"})
	}
	return res
}

// checkStateDir: the state directory (or the nearest existing parent,
// /run by default) must be writable: sockets, mounts and locks live there.
func checkStateDir(dir string) checkResult {
	p := dir
	for {
		if _, err := os.Stat(p); err == nil {
			break
		}
		if parent := filepath.Dir(p); parent != p {
			p = parent
		} else {
			break
		}
	}
	tmp, err := os.MkdirTemp(p, ".sockfaas-doctor-")
	if err != nil {
		return checkResult{level: levelFail, what: p + " is not writable: " + err.Error(),
			fix: "run as root, or pass --state-dir with a short writable path on a tmpfs"}
	}
	os.Remove(tmp)
	what := p + " is writable"
	if p != dir {
		what += " (the state directory " + dir + " is made on start)"
	}
	return checkResult{level: levelOK, what: what}
}

func checkIPForward() checkResult {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		return checkResult{level: levelWarn, what: "net.ipv4.ip_forward unreadable: " + err.Error()}
	}
	v := strings.TrimSpace(string(data))
	what := "net.ipv4.ip_forward = " + v
	if v == "0" {
		what += " (sockfaas run turns it on for functions' egress and says so in its log)"
	}
	return checkResult{level: levelOK, what: what}
}

// checkGateway connects to the NATS servers of --gateway URL as `run`
// would, and asks for JetStream, which queues the events. Nothing to check
// for a single host or an embedded server.
func checkGateway(ctx context.Context, gateway, creds string) []checkResult {
	switch strings.ToLower(strings.TrimSpace(gateway)) {
	case "", "none", "embedded":
		return nil
	}
	urls, err := parseNATSURLs(gateway)
	if err != nil {
		return []checkResult{{level: levelFail, what: "gateway: " + err.Error()}}
	}
	safe := natsgw.Redact(urls)
	opts := []nats.Option{nats.Name("sockfaas doctor"), nats.Timeout(5 * time.Second), nats.MaxReconnects(0)}
	if creds != "" {
		if _, err := os.Stat(creds); err != nil {
			return []checkResult{{level: levelFail, what: "gateway: --nats-creds: " + err.Error()}}
		}
		opts = append(opts, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(urls, opts...)
	if err != nil {
		fix := "start a NATS server with JetStream (nats-server -js), check the address and the firewall,\nor use --gateway embedded for hosts on one machine"
		if errors.Is(err, nats.ErrAuthorization) {
			fix = "give sockfaas the cluster's credentials: --nats-creds FILE, or user:password@ in the URL (in SOCKFAAS_GATEWAY or the config file)"
		}
		return []checkResult{{level: levelFail, what: fmt.Sprintf("gateway: NATS at %s: %v", safe, natsgw.RedactError(err, urls)), fix: fix}}
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err == nil {
		_, err = js.AccountInfo(ctx)
	}
	if err != nil {
		return []checkResult{{level: levelFail, what: fmt.Sprintf("gateway: NATS at %s answers, without JetStream: %v", nc.ConnectedUrlRedacted(), err),
			fix: "sockfaas queues events in JetStream: start nats-server with -js (or enable JetStream for this account)"}}
	}
	return []checkResult{{level: levelOK, what: fmt.Sprintf("gateway: NATS %s at %s answers, with JetStream", nc.ConnectedServerVersion(), nc.ConnectedUrlRedacted())}}
}
