package cgpool

import (
	"errors"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests in this file run on a cgroup v2 hierarchy: the host's, or on a
// hybrid host the cgroup2 mount at /sys/fs/cgroup/unified, which has the
// core files (cgroup.freeze, cgroup.kill, cpu.stat) but usually no
// controllers.

func v2Layout(t *testing.T) Layout {
	t.Helper()
	if l, err := Detect(); err == nil && l.Version == V2 {
		return l
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup/unified", &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Skip("no cgroup v2 hierarchy")
	}
	return Layout{Version: V2, Unified: "/sys/fs/cgroup/unified"}
}

func newV2Pool(t *testing.T, size int) *Pool {
	t.Helper()
	l := v2Layout(t)
	return newTestPool(t, Config{Size: size, Layout: &l})
}

func TestV2Lifecycle(t *testing.T) {
	p := newV2Pool(t, 2)
	ctx := testCtx(t, 20*time.Second)
	ctrls := p.Controllers()
	t.Logf("controllers: %v", ctrls)
	if !slices.Contains(ctrls, "freezer") || !slices.Contains(ctrls, "cpuacct") || !p.hasKill {
		t.Fatalf("controllers %v kill %v: want the core cgroup.freeze, cpu.stat and cgroup.kill", ctrls, p.hasKill)
	}
	if len(p.tree.dirs) != 1 {
		t.Fatalf("dirs %v, want one", p.tree.dirs)
	}

	// A limit without its controller is unsupported, and nothing leaks.
	for c, l := range map[string]Limits{"memory": {MemoryBytes: 32 << 20}, "cpu": {CPUMillis: 100}, "pids": {Pids: 10}} {
		if slices.Contains(ctrls, c) {
			continue
		}
		if _, err := p.Get(ctx, l); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s limit without the controller: %v, want ErrUnsupported", c, err)
		}
	}

	c, err := p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Paths()) != 1 || len(c.ProcsFiles()) != 1 {
		t.Errorf("paths %v procs %v, want one each", c.Paths(), c.ProcsFiles())
	}
	sleeper := startProc(t, exec.Command("sleep", "100"))
	if err := c.Attach(sleeper.pid()); err != nil {
		t.Fatal(err)
	}
	if pids, err := c.Pids(); err != nil || !slices.Equal(pids, []int{sleeper.pid()}) {
		t.Errorf("Pids() = %v, %v", pids, err)
	}
	line := "0::" + c.Name()
	if got := readTrim(t, "/proc/"+strconv.Itoa(sleeper.pid())+"/cgroup"); !strings.Contains(got, line) {
		t.Errorf("/proc/pid/cgroup = %q, want a line %q", got, line)
	}
	busy := checkFreezeStopsBusyLoop(t, c)
	if _, err := c.Stats(); err != nil {
		t.Error(err)
	}

	start := time.Now()
	if err := c.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("cgroup.kill emptied the cgroup in %v", time.Since(start))
	sleeper.waitKilled(t)
	busy.waitKilled(t)
	if pids, err := c.Pids(); err != nil || len(pids) != 0 {
		t.Errorf("after Kill: %v, %v", pids, err)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenDir(); err != nil {
		t.Errorf("OpenDir: %v", err)
	}
}

func TestV2PutFrozenWithProcess(t *testing.T) {
	p := newV2Pool(t, 1)
	ctx := testCtx(t, 20*time.Second)
	c, sleeper := withSleeper(t, ctx, p, Limits{})
	if err := c.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	sleeper.waitKilled(t)
	if got := readTrim(t, c.paths[0]+"/cgroup.freeze"); got != "0" {
		t.Errorf("cgroup.freeze after Put = %s, want 0", got)
	}
}

// clone3(CLONE_INTO_CGROUP): the child is in the cgroup from its first
// instruction.
func TestV2CloneIntoCgroup(t *testing.T) {
	p := newV2Pool(t, 1)
	ctx := testCtx(t, 20*time.Second)
	c, err := p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := c.OpenDir()
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	cmd := exec.Command("/bin/sh", "-c", "cat /proc/self/cgroup; exec sleep 100")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sleeper := startProc(t, cmd)
	buf := make([]byte, 4096)
	n, _ := out.Read(buf)
	if !strings.Contains(string(buf[:n]), "0::"+c.Name()+"\n") {
		t.Errorf("child's first view of /proc/self/cgroup:\n%s\nwant 0::%s", buf[:n], c.Name())
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	sleeper.waitKilled(t)
}

// A fork bomb in a v2 cgroup dies by cgroup.kill. On a hybrid host the v2
// hierarchy has no pids controller, so the bomb is also put in a v1 cgroup
// with a pids limit to contain it.
func TestV2KillForkBomb(t *testing.T) {
	needBombTools(t)
	p := newV2Pool(t, 1)
	ctx := testCtx(t, 30*time.Second)
	const limit = 64
	var cages []*Cgroup
	if p.ctrl[ctrlPids] >= 0 {
		c, err := p.Get(ctx, Limits{Pids: limit})
		if err != nil {
			t.Fatal(err)
		}
		cages = append(cages, c)
	} else {
		c, err := p.Get(ctx, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		cages = append(cages, c)
		if l, err := Detect(); err != nil || l.Version != V1 {
			t.Skip("no pids controller to contain the bomb")
		}
		v1 := newTestPool(t, Config{Size: 1})
		if v1.ctrl[ctrlPids] < 0 {
			t.Skip("no pids controller to contain the bomb")
		}
		cage, err := v1.Get(ctx, Limits{Pids: limit})
		if err != nil {
			t.Fatal(err)
		}
		cages = append(cages, cage)
	}
	bomb := startBlocked(t, forkBomb)
	for _, c := range cages {
		if err := c.Attach(bomb.pid()); err != nil {
			t.Fatal(err)
		}
	}
	bomb.release(t)
	c := cages[0]
	waitFor(t, "the bomb to fill the cgroup", func() bool {
		pids, err := c.Pids()
		return err == nil && len(pids) >= limit/2
	})
	start := time.Now()
	if err := c.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the bomb in %v", time.Since(start))
	bomb.waitKilled(t)
	for _, c := range cages {
		if pids, err := c.Pids(); err != nil || len(pids) != 0 {
			t.Errorf("%s after Kill: %v, %v", c.Name(), pids, err)
		}
		if err := c.pool.Put(ctx, c); err != nil {
			t.Error(err)
		}
	}
}

func TestV1HasNoCgroupDirFD(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	if p.layout.Version != V1 {
		t.Skip("cgroup v1 only")
	}
	c, err := p.Get(testCtx(t, 5*time.Second), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if f, err := c.OpenDir(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("OpenDir on v1: %v, want ErrUnsupported", err)
		if f != nil {
			f.Close()
		}
	}
	// A child handed the cgroup.procs fds joins by writing "0" to each,
	// as a zygote's child does before it runs user code.
	files, err := c.OpenProcs()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(c.Paths()) {
		t.Fatalf("%d procs fds for %d hierarchies", len(files), len(c.Paths()))
	}
	script := ""
	for i := range files {
		script += "echo 0 >&" + strconv.Itoa(3+i) + " && "
	}
	cmd := exec.Command("/bin/sh", "-c", script+"exec sleep 100")
	cmd.ExtraFiles = files
	child := startProc(t, cmd)
	for _, f := range files {
		f.Close()
	}
	want := strconv.Itoa(child.pid())
	for _, f := range c.ProcsFiles() {
		waitFor(t, "the child to join "+f, func() bool { return readTrim(t, f) == want })
	}
	if err := p.Put(testCtx(t, 5*time.Second), c); err != nil {
		t.Fatal(err)
	}
	child.waitKilled(t)
}
