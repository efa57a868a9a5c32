package libct

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
)

// oomKills reads how many times the OOM killer acted in the cgroup: the
// "oom_kill" line of memory.oom_control on cgroup v1, of memory.events on
// v2. paths is libcontainer's controller -> directory map.
func oomKills(paths map[string]string) (uint64, error) {
	if p := paths["memory"]; p != "" {
		return readKeyed(filepath.Join(p, "memory.oom_control"), "oom_kill")
	}
	if p := paths[""]; p != "" && cgroups.IsCgroup2UnifiedMode() {
		return readKeyed(filepath.Join(p, "memory.events"), "oom_kill")
	}
	return 0, fmt.Errorf("no memory cgroup: %w", errUnsupportedCgroup)
}

var errUnsupportedCgroup = errors.New("cgroup layout not supported")

// readKeyed reads the value of key from a "key value" per line file.
func readKeyed(file, key string) (uint64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no %q line", file, key)
}

// killCgroup SIGKILLs every process in the cgroups in paths and waits, up to
// timeout, until they are gone. It is what crash recovery uses when
// libcontainer no longer knows the container; live sandboxes go through
// libcontainer instead.
func killCgroup(paths map[string]string, timeout time.Duration) error {
	if len(paths) == 0 {
		return nil
	}
	killed := false
	// cgroup.kill (Linux 5.14) kills atomically, even forking processes;
	// in hybrid mode every process is also in the unified hierarchy.
	if p := paths[""]; p != "" {
		err := os.WriteFile(filepath.Join(p, "cgroup.kill"), []byte("1"), 0)
		killed = err == nil
	}
	freezer := paths["freezer"]
	if !killed {
		// Freeze so that nothing forks while we collect pids; SIGKILL is
		// delivered once thawed.
		if freezer != "" {
			_ = os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("FROZEN"), 0)
		}
		for _, pid := range cgroupPids(paths) {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
	if freezer != "" {
		// Frozen tasks do not die until thawed (cgroup v1).
		_ = os.WriteFile(filepath.Join(freezer, "freezer.state"), []byte("THAWED"), 0)
	}
	deadline := time.Now().Add(timeout)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 20*time.Millisecond) {
		pids := cgroupPids(paths)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still alive after SIGKILL", pids)
		}
		if !killed {
			for _, pid := range pids {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
		time.Sleep(delay)
	}
}

// cgroupPids lists the processes in any of the cgroups (and their
// descendants). Zombies have already left their cgroups.
func cgroupPids(paths map[string]string) []int {
	seen := map[int]bool{}
	var out []int
	for _, p := range paths {
		pids, err := cgroups.GetAllPids(p)
		if err != nil {
			continue
		}
		for _, pid := range pids {
			if !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out
}

// removeCgroups removes the cgroup directories in paths (with any
// sub-cgroups); missing ones are fine.
func removeCgroups(paths map[string]string) error {
	// RemovePaths deletes the entries it removed from the map it is given.
	return cgroups.RemovePaths(maps.Clone(paths))
}

// cgroupDirs lists paths' directories, sorted, for sandbox.Info.
func cgroupDirs(paths map[string]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range paths {
		if p != "" && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// removeEmptyDirs removes each directory if it is empty (used for the
// cgroup parent, which other backends may share); missing ones are fine.
func removeEmptyDirs(dirs []string) {
	for _, d := range dirs {
		_ = unix.Rmdir(d) // EBUSY: others' sandboxes still live there
	}
}
