package zygote

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/sandbox/lean"
)

// cgroupRoot is where the host's cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup/"

// writeBody puts a fork request's body (see requestBody) in a fresh memfd,
// for the child to read after the fork: the zygote passes it on unread.
func writeBody(b *requestBody) (*os.File, error) {
	data, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate("sockfaas-fork-body", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("request body: %w", err)
	}
	f := os.NewFile(uintptr(fd), "sockfaas-fork-body")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("request body: %w", err)
	}
	return f, nil
}

// openInSandbox opens a pidfd for pid, the pid a zygote reported for a
// child it forked into sb, and checks that the process is in sb's cgroup:
// a zygote is not trusted to name any other process. A process gone
// already (fd is -1 if it was reaped) cannot be signalled, and its exit
// message is on its way.
func openInSandbox(pid int, sb *lean.Sandbox) (fd int, err error) {
	if pid <= 0 {
		return -1, fmt.Errorf("bad pid %d in reply", pid)
	}
	fd, err = unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return -1, nil
		}
		return -1, fmt.Errorf("pidfd of pid %d: %w", pid, err)
	}
	// With the pidfd open, pid names that process for as long as the
	// check below finds it alive.
	ok, err := pidInCgroups(pid, sb.Info().Cgroups)
	if ok || gone(pid, fd) {
		// In sb's cgroup, or a zombie (or reaped) process that has left
		// it: harmless.
		return fd, nil
	}
	unix.Close(fd)
	if err != nil {
		return -1, fmt.Errorf("pid %d: %w", pid, err)
	}
	return -1, fmt.Errorf("reported pid %d is not in sandbox %s's cgroup: refused", pid, sb.ID())
}

// gone reports whether the process behind pidfd (pid) has exited or is
// exiting: an exiting process leaves its cgroups before it becomes a
// zombie, so a process not found in its sandbox's cgroup is given a moment
// to finish exiting. A live process elsewhere never does.
func gone(pid, pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	deadline := time.Now().Add(200 * time.Millisecond)
	for {
		n, err := unix.Poll(fds, int(time.Until(deadline)/time.Millisecond)+1)
		if err == nil && n > 0 {
			return true // a pidfd polls readable once its process exited
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			break
		}
		if time.Now().After(deadline) {
			break
		}
	}
	f := procStat(pid)
	return len(f) == 0 || f[0] == "Z" || f[0] == "X"
}

// pidInCgroups reports whether /proc/<pid>/cgroup puts the process in every
// one of dirs (host cgroup directories, as in sandbox.Info.Cgroups; one per
// v1 hierarchy, or the v2 one).
func pidInCgroups(pid int, dirs []string) (bool, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	checked := 0
	for _, dir := range dirs {
		rel, ok := strings.CutPrefix(filepath.Clean(dir), cgroupRoot)
		if !ok {
			continue // not a hierarchy we can name
		}
		checked++
		if !cgroupListed(lines, rel) {
			return false, nil
		}
	}
	return checked > 0, nil
}

// cgroupListed: whether one of /proc/<pid>/cgroup's lines names rel, a
// cgroup directory relative to cgroupRoot ("memory/a/b" in the v1 memory
// hierarchy, "a/b" in v2).
func cgroupListed(lines []string, rel string) bool {
	hier, sub, _ := strings.Cut(rel, "/")
	for _, l := range lines {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrls, path := parts[1], parts[2]
		if ctrls == "" {
			if path == "/"+rel {
				return true
			}
			continue
		}
		if path != "/"+sub {
			continue
		}
		if ctrls == hier {
			return true
		}
		for _, c := range strings.Split(ctrls, ",") {
			if c == hier || c == "name="+hier {
				return true
			}
		}
	}
	return false
}

// killStrays kills what a failed fork may have left in sb: every process
// in sb's cgroup that is not in known (nil: the processes sb lists, lean's
// Info) and whose parent is outside the cgroup, i.e. a zygote's child that
// no one adopted, or what it forked and left behind; children of known
// processes are left alone. It repeats until none is left (a killed
// process's children are the next ones), for at most limit, and returns
// the start times of the processes it killed, for waitGone.
func killStrays(sb *lean.Sandbox, known map[int]bool, limit time.Duration) map[int]string {
	info := sb.Info()
	killed := map[int]string{}
	if len(info.Cgroups) == 0 {
		return killed
	}
	procs := filepath.Join(info.Cgroups[0], "cgroup.procs")
	if known == nil {
		known = map[int]bool{}
		for _, p := range info.Pids {
			known[p] = true
		}
	}
	deadline := time.Now().Add(limit)
	for {
		in := map[int]bool{}
		for _, p := range readProcs(procs) {
			in[p] = true
		}
		strays := map[int][]string{} // pid: its stat fields
		for p := range in {
			if known[p] {
				continue
			}
			if f := procStat(p); !in[parentOf(f)] {
				strays[p] = f
			}
		}
		if len(strays) == 0 || time.Now().After(deadline) {
			return killed
		}
		for p, f := range strays {
			if st, ok := startOf(f); ok {
				killed[p] = st
			}
			if fd, err := unix.PidfdOpen(p, 0); err == nil {
				_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
				unix.Close(fd)
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// readProcs is the pids a cgroup.procs file lists (none if it cannot be
// read).
func readProcs(path string) []int {
	b, _ := os.ReadFile(path)
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// procStat is /proc/<pid>/stat's fields after the command name (the last
// ')'), the state first; nil if the file cannot be read or parsed.
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// parentOf is the parent pid in a process's stat fields (0 if unknown).
func parentOf(stat []string) int {
	if len(stat) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(stat[1])
	return p
}

// startOf is the start time in a process's stat fields (field 22 of
// /proc/<pid>/stat).
func startOf(stat []string) (string, bool) {
	if len(stat) < 20 {
		return "", false
	}
	return stat[19], true
}
