package sandboxtest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
)

// leftovers is what a sandbox occupies on the host, recorded before it is
// destroyed so that the check can then verify all of it is gone.
type leftovers struct {
	id      string
	root    string
	cgroups []string
	// procs maps host pid to its start time, so a pid the kernel hands to
	// an unrelated new process is not mistaken for a survivor.
	procs map[int]string
	// pidns are the PID namespaces those processes live in. Whatever the
	// sandbox leaves behind descends from them and stays in one of them
	// (it has no right to make new ones); a process in its old cgroup from
	// any other namespace is a new owner's, who got the cgroup from the
	// pool, possibly ahead of time (a backend's parked sandboxes).
	pidns map[uint64]bool
}

func snapshot(sb sandbox.Sandbox) leftovers {
	info := sb.Info()
	l := leftovers{id: sb.ID(), root: info.Root, cgroups: info.Cgroups, procs: map[int]string{}, pidns: map[uint64]bool{}}
	pids := append([]int(nil), info.Pids...)
	for _, dir := range info.Cgroups {
		members, _ := cgroupProcs(dir)
		pids = append(pids, members...)
	}
	for _, pid := range pids {
		if _, started, ok := procStat(pid); ok {
			l.procs[pid] = started
			if ns, ok := pidNS(pid); ok {
				l.pidns[ns] = true
			}
		}
	}
	return l
}

// pidNS returns the inode of process pid's PID namespace.
func pidNS(pid int) (uint64, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/"+strconv.Itoa(pid)+"/ns/pid", &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// assertGone reports every process, mount and cgroup member that is still
// there. A zombie counts as still there: Destroy promises to reap.
func (l leftovers) assertGone(t *testing.T) {
	t.Helper()
	for pid, started := range l.procs {
		if state, now, ok := procStat(pid); ok && now == started {
			t.Errorf("sandbox %s: process %d still exists after Destroy (state %s)", l.id, pid, state)
		}
	}
	if l.root != "" {
		if m := testutil.MountsUnder(l.root); len(m) > 0 {
			t.Errorf("sandbox %s: mounts left under its root %s after Destroy: %v", l.id, l.root, m)
		}
	}
	for _, dir := range l.cgroups {
		members, err := cgroupProcs(dir)
		if err != nil {
			t.Errorf("sandbox %s: %v", l.id, err)
			continue
		}
		var ours []int
		for _, pid := range members {
			if ns, ok := pidNS(pid); ok && l.pidns[ns] {
				ours = append(ours, pid)
			}
		}
		if len(ours) > 0 {
			t.Errorf("sandbox %s: cgroup %s still holds %v after Destroy", l.id, dir, ours)
		}
	}
}

// cgroupProcs lists the members of the cgroup at dir; a cgroup that no
// longer exists has none.
func cgroupProcs(dir string) ([]int, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// procStat returns a host process's state letter and start time (in clock
// ticks since boot), or ok=false when there is no such process.
func procStat(pid int) (state, started string, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", "", false
	}
	// The command name in parentheses may hold spaces; fields after it
	// start with the state (field 3); start time is field 22.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return "", "", false
	}
	return f[0], f[19], true
}

// hostExists says whether path exists on the host, without following a
// final symlink.
func hostExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
