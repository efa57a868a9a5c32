package cgpool

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// The error vocabulary; call sites wrap these with context, callers test
// them with errors.Is.
var (
	// ErrUnsupported: the cgroup layout or the kernel cannot do it (a limit
	// whose controller is not available, freezing without a freezer, a
	// directory fd for clone3 on cgroup v1, any of it off Linux).
	ErrUnsupported = errors.New("not supported")
	// ErrInvalid: the request is malformed (relative or unclean name,
	// negative limit, a cgroup from another pool); nothing was changed.
	ErrInvalid = errors.New("invalid argument")
	// ErrClosed: the pool has been closed.
	ErrClosed = errors.New("cgroup pool closed")
	// ErrBusy: a live pool in another process (or this one) owns the name.
	ErrBusy = errors.New("cgroup name owned by a live pool")
	// ErrForeign: a cgroup exists under the name that a pool did not make
	// (children other than cg-N, or processes of its own); it is left alone.
	ErrForeign = errors.New("cgroup not made by a sockfaas pool")
)

// Version is the cgroup layout in use.
type Version int

const (
	// V1 is the legacy layout: one hierarchy per controller (or group of
	// co-mounted controllers).
	V1 Version = 1
	// V2 is the unified hierarchy.
	V2 Version = 2
)

func (v Version) String() string {
	switch v {
	case V1:
		return "v1"
	case V2:
		return "v2"
	default:
		return fmt.Sprintf("Version(%d)", int(v))
	}
}

// Layout says where the cgroup hierarchies are mounted. Detect fills it from
// /proc/self/mountinfo; tests may build one by hand.
type Layout struct {
	Version Version
	// Mounts maps a v1 controller name (memory, cpu, cpuacct, pids,
	// freezer) to the directory where its hierarchy is mounted. Co-mounted
	// controllers map to the same directory.
	Mounts map[string]string
	// Roots maps a v1 controller to the cgroup path its mount shows (the
	// mount's root, "/docker/<id>" in a container without a cgroup
	// namespace). A missing entry means "/".
	Roots map[string]string
	// Unified is the v2 mount point.
	Unified string
	// UnifiedRoot is the cgroup path the v2 mount shows; "" means "/".
	UnifiedRoot string
}

// Path returns the host directory of the absolute cgroup path cg in the
// hierarchy of controller (ignored on v2). cg must lie under the mount's
// root, since nothing outside it is reachable through the mount.
func (l Layout) Path(controller, cg string) (string, error) {
	if err := checkName(cg, true); err != nil {
		return "", err
	}
	var mnt, root string
	switch l.Version {
	case V2:
		mnt, root = l.Unified, l.UnifiedRoot
		if mnt == "" {
			return "", fmt.Errorf("cgroup v2 mount point unknown: %w", ErrUnsupported)
		}
	case V1:
		var ok bool
		if mnt, ok = l.Mounts[controller]; !ok || mnt == "" {
			return "", fmt.Errorf("cgroup v1 controller %s not mounted: %w", controller, ErrUnsupported)
		}
		root = l.Roots[controller]
	default:
		return "", fmt.Errorf("cgroup layout %s: %w", l.Version, ErrInvalid)
	}
	if root == "" || root == "/" {
		return path.Join(mnt, cg), nil
	}
	if cg == root {
		return mnt, nil
	}
	if rest, ok := strings.CutPrefix(cg, root+"/"); ok {
		return path.Join(mnt, rest), nil
	}
	return "", fmt.Errorf("cgroup %s is outside the root %s of the mount at %s: %w", cg, root, mnt, ErrInvalid)
}

// Limits are applied to a cgroup by Get. Zero means unlimited.
type Limits struct {
	MemoryBytes int64 // memory.limit_in_bytes (v1) / memory.max (v2)
	CPUMillis   int64 // CPU quota in thousandths of a CPU: 1000 = one CPU
	Pids        int64 // pids.max
}

func (l Limits) validate() error {
	if l.MemoryBytes < 0 || l.CPUMillis < 0 || l.Pids < 0 {
		return fmt.Errorf("negative limit %+v: %w", l, ErrInvalid)
	}
	return nil
}

// Stats is a snapshot of a cgroup's usage. A field whose controller is not
// available is zero.
type Stats struct {
	MemoryBytes     uint64 // current charge, page cache included
	MemoryPeakBytes uint64 // high-water mark since Get (see Cgroup.Stats)
	CPUNanos        uint64 // CPU time of all processes, ever
	Pids            uint64 // live tasks
	OOMKills        uint64 // OOM kills since Get
}

// Config describes a pool. It is plain data; New validates it.
type Config struct {
	// Name is the absolute cgroup path of the parent, e.g. "/sockfaas".
	// The pool owns it and everything below it.
	Name string
	// Size is how many cgroups are pre-created; 0 means 16. The pool grows
	// past it when Get finds the free list empty.
	Size int
	// Layout says where the hierarchies are; nil means Detect().
	Layout *Layout
	// DrainTimeout bounds how long Put waits for a cgroup to empty (and
	// Close or Cleanup, when their ctx has no deadline); 0 means 5s.
	DrainTimeout time.Duration
	// Logger receives lifecycle events (info) and dropped cgroups (warn).
	Logger zerolog.Logger
}

const (
	defaultSize  = 16
	defaultDrain = 5 * time.Second
)

// checkName accepts clean absolute cgroup paths; root is "/" allowed.
func checkName(name string, rootOK bool) error {
	if !strings.HasPrefix(name, "/") || path.Clean(name) != name {
		return fmt.Errorf("cgroup path %q is not absolute and clean: %w", name, ErrInvalid)
	}
	if name == "/" && !rootOK {
		return fmt.Errorf("cgroup path %q: the root cannot be a pool parent: %w", name, ErrInvalid)
	}
	return nil
}
