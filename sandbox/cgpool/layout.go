package cgpool

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/sockfaas/sockfaas/internal/mountinfo"
)

// The v1 controllers the pool uses, in the order Paths lists hierarchies.
const (
	ctrlMemory = iota
	ctrlCPU
	ctrlCPUAcct
	ctrlPids
	ctrlFreezer
	numCtrl
)

func ctrlName(c int) string {
	switch c {
	case ctrlMemory:
		return "memory"
	case ctrlCPU:
		return "cpu"
	case ctrlCPUAcct:
		return "cpuacct"
	case ctrlPids:
		return "pids"
	case ctrlFreezer:
		return "freezer"
	}
	return "controller" + strconv.Itoa(c)
}

type mountEntry struct {
	root, point, fstype string
	superOpts           []string
}

// parseLayout builds a Layout from /proc/<pid>/mountinfo text. A cgroup2
// mount on /sys/fs/cgroup means v2; otherwise the v1 hierarchies of the
// pool's controllers; failing those, any cgroup2 mount.
func parseLayout(r io.Reader) (Layout, error) {
	var order []string
	byPoint := map[string]mountEntry{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// Every mount is kept, not only cgroup ones: a later mount of
		// anything on the same point hides the earlier one.
		e, ok := parseMountLine(sc.Text())
		if !ok {
			continue
		}
		if _, seen := byPoint[e.point]; !seen {
			order = append(order, e.point)
		}
		byPoint[e.point] = e
	}
	if err := sc.Err(); err != nil {
		return Layout{}, fmt.Errorf("read mountinfo: %w", err)
	}

	if e, ok := byPoint["/sys/fs/cgroup"]; ok && e.fstype == "cgroup2" {
		return Layout{Version: V2, Unified: e.point, UnifiedRoot: e.root}, nil
	}

	l := Layout{Version: V1, Mounts: map[string]string{}, Roots: map[string]string{}}
	for _, point := range order {
		e := byPoint[point]
		if e.fstype != "cgroup" {
			continue
		}
		for c := 0; c < numCtrl; c++ {
			name := ctrlName(c)
			if !slices.Contains(e.superOpts, name) {
				continue
			}
			// The same hierarchy may be mounted twice (a bind of a
			// sub-cgroup); the mount showing the most of it wins.
			if _, have := l.Mounts[name]; have && len(l.Roots[name]) <= len(e.root) {
				continue
			}
			l.Mounts[name] = e.point
			l.Roots[name] = e.root
		}
	}
	if len(l.Mounts) > 0 {
		for name, root := range l.Roots {
			if root == "/" {
				delete(l.Roots, name)
			}
		}
		return l, nil
	}
	for _, point := range order {
		if e := byPoint[point]; e.fstype == "cgroup2" {
			return Layout{Version: V2, Unified: e.point, UnifiedRoot: e.root}, nil
		}
	}
	return Layout{}, fmt.Errorf("no cgroup hierarchy mounted: %w", ErrUnsupported)
}

// parseMountLine splits one mountinfo line:
// id parent major:minor root point options [optional...] - fstype source superoptions
func parseMountLine(line string) (mountEntry, bool) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(f) < sep+2 {
		return mountEntry{}, false
	}
	e := mountEntry{
		root:   mountinfo.Unescape(f[3]),
		point:  mountinfo.Unescape(f[4]),
		fstype: f[sep+1],
	}
	if len(f) > sep+3 {
		e.superOpts = strings.Split(f[sep+3], ",")
	}
	return e, true
}
