package cgpool

import (
	"errors"
	"strings"
	"testing"
)

const hybridMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

// A container without a cgroup namespace: each hierarchy shows only the
// container's cgroup, cpu and cpuacct are co-mounted, and the memory
// hierarchy is also bind-mounted from its real root elsewhere.
const containerMountinfo = `100 99 0:50 / / rw - overlay overlay rw
110 100 0:60 / /sys/fs/cgroup ro - tmpfs tmpfs rw,mode=755
111 110 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
112 110 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
113 110 0:36 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
114 110 0:34 /docker/abc /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
115 100 0:32 / /host\040memory rw - cgroup cgroup rw,memory
`

const v2Mountinfo = `22 1 8:1 / / rw - ext4 /dev/sda1 rw
26 23 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`

func TestParseLayoutHybrid(t *testing.T) {
	l, err := parseLayout(strings.NewReader(hybridMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if l.Version != V1 {
		t.Fatalf("version %v, want v1", l.Version)
	}
	want := map[string]string{
		"memory": "/sys/fs/cgroup/memory", "cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
		"pids": "/sys/fs/cgroup/pids", "freezer": "/sys/fs/cgroup/freezer",
	}
	if len(l.Mounts) != len(want) {
		t.Errorf("mounts %v, want %v", l.Mounts, want)
	}
	for c, m := range want {
		if l.Mounts[c] != m {
			t.Errorf("mount of %s = %q, want %q", c, l.Mounts[c], m)
		}
	}
	if len(l.Roots) != 0 {
		t.Errorf("roots %v, want none", l.Roots)
	}
	tr, err := treeOf(l, "/sockfaas")
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.dirs) != 5 || tr.freezer != "/sys/fs/cgroup/freezer/sockfaas" {
		t.Errorf("tree %+v", tr)
	}
}

func TestParseLayoutContainer(t *testing.T) {
	l, err := parseLayout(strings.NewReader(containerMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if l.Version != V1 {
		t.Fatalf("version %v, want v1", l.Version)
	}
	if l.Mounts["cpu"] != "/sys/fs/cgroup/cpu,cpuacct" || l.Mounts["cpuacct"] != l.Mounts["cpu"] {
		t.Errorf("cpu %q cpuacct %q, want both co-mounted", l.Mounts["cpu"], l.Mounts["cpuacct"])
	}
	// The bind of the whole memory hierarchy shows more of it.
	if l.Mounts["memory"] != "/host memory" || l.Roots["memory"] != "" {
		t.Errorf("memory at %q root %q, want /host memory with root /", l.Mounts["memory"], l.Roots["memory"])
	}
	for _, tc := range []struct{ ctrl, cg, want string }{
		{"cpu", "/docker/abc/sockfaas/cg-1", "/sys/fs/cgroup/cpu,cpuacct/sockfaas/cg-1"},
		{"pids", "/docker/abc", "/sys/fs/cgroup/pids"},
		{"memory", "/docker/abc/x", "/host memory/docker/abc/x"},
	} {
		got, err := l.Path(tc.ctrl, tc.cg)
		if err != nil || got != tc.want {
			t.Errorf("Path(%s, %s) = %q, %v; want %q", tc.ctrl, tc.cg, got, err, tc.want)
		}
	}
	for _, cg := range []string{"/sockfaas", "/docker/abcd/x", "/docker"} {
		if _, err := l.Path("pids", cg); !errors.Is(err, ErrInvalid) {
			t.Errorf("Path(pids, %s) error %v, want ErrInvalid (outside the mount root)", cg, err)
		}
	}
	tr, err := treeOf(l, "/docker/abc/sockfaas")
	if err != nil {
		t.Fatal(err)
	}
	// memory, cpu+cpuacct (one hierarchy), pids, freezer.
	if len(tr.dirs) != 4 {
		t.Errorf("tree dirs %v, want 4 (cpu and cpuacct deduplicated)", tr.dirs)
	}
}

func TestParseLayoutV2(t *testing.T) {
	l, err := parseLayout(strings.NewReader(v2Mountinfo + hybridMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	// The later mounts on /sys/fs/cgroup hide the cgroup2 one: hybrid.
	if l.Version != V1 {
		t.Errorf("over-mounted v2: version %v, want v1", l.Version)
	}
	l, err = parseLayout(strings.NewReader(v2Mountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if l.Version != V2 || l.Unified != "/sys/fs/cgroup" {
		t.Fatalf("layout %+v, want v2 at /sys/fs/cgroup", l)
	}
	if got, err := l.Path("", "/sockfaas/cg-0"); err != nil || got != "/sys/fs/cgroup/sockfaas/cg-0" {
		t.Errorf("Path = %q, %v", got, err)
	}
	l.UnifiedRoot = "/user.slice"
	if got, err := l.Path("", "/user.slice/sockfaas"); err != nil || got != "/sys/fs/cgroup/sockfaas" {
		t.Errorf("Path under a root = %q, %v", got, err)
	}
}

func TestParseLayoutNone(t *testing.T) {
	_, err := parseLayout(strings.NewReader("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"))
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("no cgroups: error %v, want ErrUnsupported", err)
	}
}

func TestLayoutPathRejectsBadNames(t *testing.T) {
	l := Layout{Version: V2, Unified: "/sys/fs/cgroup"}
	for _, cg := range []string{"sockfaas", "/a/../b", "/a/", ""} {
		if _, err := l.Path("", cg); !errors.Is(err, ErrInvalid) {
			t.Errorf("Path(%q) error %v, want ErrInvalid", cg, err)
		}
	}
	if err := checkName("/", false); !errors.Is(err, ErrInvalid) {
		t.Errorf("root as pool parent: %v, want ErrInvalid", err)
	}
}
