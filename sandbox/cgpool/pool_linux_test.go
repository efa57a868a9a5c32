package cgpool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"golang.org/x/sys/unix"
)

// The tests in this file run on whatever layout Detect finds; on the
// project's hybrid CI machine that is cgroup v1.

func TestDetect(t *testing.T) {
	l, err := Detect()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		if l.Version != V2 || l.Unified != "/sys/fs/cgroup" {
			t.Fatalf("layout %+v, want v2 at /sys/fs/cgroup", l)
		}
		return
	}
	if l.Version != V1 {
		t.Fatalf("layout %+v, want v1", l)
	}
	for _, c := range []string{"memory", "cpu", "cpuacct", "pids", "freezer"} {
		m, ok := l.Mounts[c]
		if !ok {
			t.Errorf("controller %s not found in %v", c, l.Mounts)
			continue
		}
		d, err := l.Path(c, "/")
		if err != nil || d != m {
			t.Errorf("Path(%s, /) = %q, %v; want %q", c, d, err, m)
		}
		if _, err := os.Stat(m + "/cgroup.procs"); err != nil {
			t.Errorf("%s: %v", c, err)
		}
	}
	if _, err := os.Stat(l.Mounts["memory"] + "/memory.limit_in_bytes"); err != nil {
		t.Errorf("memory mount: %v", err)
	}
}

func TestNewMakesParentAndChildren(t *testing.T) {
	p := newTestPool(t, Config{Size: 3})
	if len(p.tree.dirs) == 0 {
		t.Fatal("no hierarchy")
	}
	for _, d := range p.tree.dirs {
		for i := range 3 {
			if _, err := os.Stat(fmt.Sprintf("%s/cg-%d", d, i)); err != nil {
				t.Error(err)
			}
		}
	}
	if p.layout.Version == V1 {
		// memory, cpu, cpuacct, pids, freezer: five separate mounts here,
		// fewer where some are co-mounted.
		if got := p.Controllers(); len(got) != numCtrl {
			t.Errorf("controllers %v, want all five", got)
		}
	}
}

func TestNewNestedParentRemovesWhatItCreated(t *testing.T) {
	top := "/" + testutil.UniqueName(t)
	p := newTestPool(t, Config{Name: top + "/a/pool", Size: 1})
	if len(p.created) == 0 {
		t.Fatalf("created %v, want the ancestors %s and %s/a", p.created, top, top)
	}
	if _, err := os.Stat(p.created[len(p.created)-1]); err != nil {
		t.Fatal(err)
	}
	// closeAndCheck (at cleanup) checks they are gone again.
}

func TestNewRejectsBadConfig(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := testCtx(t, 5*time.Second)
	for _, cfg := range []Config{{Name: "relative"}, {Name: "/"}, {Name: "/a/../b"}, {Name: "/" + testutil.UniqueName(t), Size: -1}} {
		if p, err := New(ctx, cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("New(%+v) error %v, want ErrInvalid", cfg, err)
			if p != nil {
				_ = p.Close(ctx)
			}
		}
	}
}

func TestGetPutReuse(t *testing.T) {
	p := newTestPool(t, Config{Size: 2})
	ctx := testCtx(t, 10*time.Second)
	l := Limits{MemoryBytes: 64 << 20, CPUMillis: 500, Pids: 32}
	c1, err := p.Get(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	name := c1.Name()
	if !strings.HasPrefix(name, p.Name()+"/cg-") {
		t.Errorf("name %q not under %q", name, p.Name())
	}
	if err := p.Put(ctx, c1); err != nil {
		t.Fatal(err)
	}
	c2, err := p.Get(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	if c2 != c1 || c2.Name() != name {
		t.Errorf("got %s after putting %s back, want the same cgroup", c2.Name(), name)
	}
	if pids, err := c2.Pids(); err != nil || len(pids) != 0 {
		t.Errorf("reused cgroup has pids %v (%v)", pids, err)
	}
	st, err := c2.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Pids != 0 || st.OOMKills != 0 {
		t.Errorf("reused cgroup stats %+v", st)
	}
	// A second cgroup while c2 is out is another one.
	c3, err := p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if c3 == c2 {
		t.Error("one cgroup handed out twice")
	}
	for _, c := range []*Cgroup{c2, c3} {
		if err := p.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPoolGrows(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	ctx := testCtx(t, 10*time.Second)
	var got []*Cgroup
	for range 3 {
		c, err := p.Get(ctx, Limits{Pids: 10})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, c)
	}
	names := map[string]bool{}
	for _, c := range got {
		names[c.Name()] = true
		for _, d := range c.Paths() {
			if _, err := os.Stat(d); err != nil {
				t.Error(err)
			}
		}
	}
	if len(names) != 3 {
		t.Errorf("names %v, want 3 distinct", names)
	}
	for _, c := range got {
		if err := p.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
}

// limitFiles reads back the limit files of c: memory, cpu quota, pids.
func limitFiles(t *testing.T, c *Cgroup) (mem, cpu, pids string) {
	t.Helper()
	f := c.files
	return readTrim(t, f.memLimit), readTrim(t, f.cpuQuota), readTrim(t, f.pidsMax)
}

func TestLimitsAreWritten(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	if len(p.Controllers()) < numCtrl {
		t.Skipf("needs memory, cpu and pids controllers; have %v", p.Controllers())
	}
	ctx := testCtx(t, 10*time.Second)
	v2 := p.layout.Version == V2

	c, err := p.Get(ctx, Limits{MemoryBytes: 64 << 20, CPUMillis: 500, Pids: 32})
	if err != nil {
		t.Fatal(err)
	}
	mem, cpu, pids := limitFiles(t, c)
	wantCPU := "50000"
	if v2 {
		wantCPU = "50000 100000"
	} else if got := readTrim(t, c.files.cpuPeriod); got != "100000" {
		t.Errorf("cpu.cfs_period_us = %s, want 100000", got)
	}
	if mem != strconv.Itoa(64<<20) || cpu != wantCPU || pids != "32" {
		t.Errorf("limits read back: memory %s cpu %s pids %s", mem, cpu, pids)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}

	// Same limits again: nothing is written. Prove it by changing a
	// file behind the pool's back; Get leaves it alone.
	if err := os.WriteFile(c.files.pidsMax, []byte("33"), 0); err != nil {
		t.Fatal(err)
	}
	c, err = p.Get(ctx, Limits{MemoryBytes: 64 << 20, CPUMillis: 500, Pids: 32})
	if err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, c.files.pidsMax); got != "33" {
		t.Errorf("pids.max = %s: Get rewrote an unchanged limit", got)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}

	// Back to unlimited.
	c, err = p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	mem, cpu, pids = limitFiles(t, c)
	if v2 {
		if mem != "max" || cpu != "max 100000" || pids != "max" {
			t.Errorf("unlimited read back: memory %s cpu %s pids %s", mem, cpu, pids)
		}
	} else {
		n, err := strconv.ParseUint(mem, 10, 64)
		if err != nil || n < 1<<62 || cpu != "-1" || pids != "max" {
			t.Errorf("unlimited read back: memory %s cpu %s pids %s", mem, cpu, pids)
		}
	}
	// A tiny CPU share is raised to the kernel's 1ms floor.
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	c, err = p.Get(ctx, Limits{CPUMillis: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, cpu, _ := limitFiles(t, c); !strings.HasPrefix(cpu, "1000") || strings.HasPrefix(cpu, "10000") {
		t.Errorf("cpu quota for 1 milli-CPU = %q, want 1000", cpu)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}

	if _, err := p.Get(ctx, Limits{Pids: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative limit: %v, want ErrInvalid", err)
	}
}

func TestMemoryLimitBelowLeftoverCharge(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	if p.layout.Version != V1 || p.ctrl[ctrlMemory] < 0 {
		t.Skip("cgroup v1 memory controller only")
	}
	ctx := testCtx(t, 20*time.Second)
	c, err := p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// Leave page cache charged to the cgroup: write a 16 MiB file and
	// keep it.
	file := path.Join(t.TempDir(), "cache")
	w := startBlocked(t, "dd if=/dev/zero of="+file+" bs=1M count=16 status=none")
	if err := c.Attach(w.pid()); err != nil {
		t.Fatal(err)
	}
	w.release(t)
	if err := w.wait(); err != nil {
		t.Fatal(err)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	usage, err := readUint(c.files.memUsage)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("charge left after the process exited: %d KiB", usage>>10)
	// 4 MiB, below the leftover charge: the kernel reclaims or says
	// EBUSY, in which case Get forces the charge out and retries.
	c, err = p.Get(ctx, Limits{MemoryBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, c.files.memLimit); got != strconv.Itoa(4<<20) {
		t.Errorf("memory.limit_in_bytes = %s", got)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
}

func TestAttachAndPutKillsIt(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	ctx := testCtx(t, 10*time.Second)
	c, sleeper := withSleeper(t, ctx, p, Limits{Pids: 16})
	want := strconv.Itoa(sleeper.pid())
	for _, f := range c.ProcsFiles() {
		if got := readTrim(t, f); got != want {
			t.Errorf("%s = %q, want %s", f, got, want)
		}
	}
	// And the kernel agrees, hierarchy by hierarchy.
	self := readTrim(t, "/proc/"+want+"/cgroup")
	for _, line := range strings.Split(self, "\n") {
		parts := strings.SplitN(line, ":", 3)
		for c2, i := range p.ctrl {
			if i >= 0 && p.layout.Version == V1 && slices.Contains(strings.Split(parts[1], ","), ctrlName(c2)) && parts[2] != c.Name() {
				t.Errorf("/proc/%s/cgroup: %s", want, line)
			}
		}
	}
	if pids, err := c.Pids(); err != nil || !slices.Equal(pids, []int{sleeper.pid()}) {
		t.Errorf("Pids() = %v, %v; want [%d]", pids, err, sleeper.pid())
	}
	if st, err := c.Stats(); err != nil || (p.ctrl[ctrlPids] >= 0 && st.Pids != 1) {
		t.Errorf("Stats() = %+v, %v", st, err)
	}
	if err := c.Attach(1 << 30); err == nil || !strings.Contains(err.Error(), "cgroup.procs") {
		t.Errorf("attach of a missing pid: %v, want an error naming the file", err)
	}

	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	sleeper.waitKilled(t)
	c2, err := p.Get(ctx, Limits{Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	if c2 != c {
		t.Fatal("the cgroup was not reused")
	}
	if pids, err := c2.Pids(); err != nil || len(pids) != 0 {
		t.Errorf("reused cgroup not empty: %v, %v", pids, err)
	}
	if err := p.Put(ctx, c2); err != nil {
		t.Fatal(err)
	}
}

func TestFreezeThaw(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	if p.ctrl[ctrlFreezer] < 0 {
		t.Skip("no freezer")
	}
	ctx := testCtx(t, 20*time.Second)
	c, err := p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	busy := checkFreezeStopsBusyLoop(t, c)
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	busy.waitKilled(t)
}

func TestPutFrozenCgroup(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	if p.ctrl[ctrlFreezer] < 0 {
		t.Skip("no freezer")
	}
	ctx := testCtx(t, 20*time.Second)
	c, sleeper := withSleeper(t, ctx, p, Limits{})
	if err := c.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	sleeper.waitKilled(t)
	// The next user must not find it frozen.
	c, err := p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if p.layout.Version == V1 {
		if got := readTrim(t, c.files.freezeDir+"/freezer.state"); got != "THAWED" {
			t.Errorf("freezer.state after Put = %s", got)
		}
	} else if got := readTrim(t, c.files.freezeDir+"/cgroup.freeze"); got != "0" {
		t.Errorf("cgroup.freeze after Put = %s", got)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
}

// forkBomb: every process forks as fast as it can, forever, shrugging off
// the pids limit's EAGAIN. (dash gives up on its first failed fork, so the
// classic shell bomb would die out by itself.)
const forkBomb = `exec /usr/bin/python3 -c '
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
'`

func needBombTools(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("the fork bomb needs /usr/bin/python3")
	}
}

func TestKillForkBomb(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	if p.ctrl[ctrlPids] < 0 {
		t.Skip("no pids controller: a fork bomb would not be contained")
	}
	ctx := testCtx(t, 30*time.Second)
	needBombTools(t)
	const limit = 64
	c, err := p.Get(ctx, Limits{Pids: limit, MemoryBytes: 512 << 20})
	if err != nil {
		t.Fatal(err)
	}
	bomb := startBlocked(t, forkBomb)
	if err := c.Attach(bomb.pid()); err != nil {
		t.Fatal(err)
	}
	bomb.release(t)
	waitFor(t, "the bomb to fill the cgroup", func() bool {
		pids, err := c.Pids()
		return err == nil && len(pids) >= limit/2
	})
	if n, err := readUint(c.files.pidsCurrent); err != nil || n > limit {
		t.Errorf("pids.current = %d (%v), limit %d", n, err, limit)
	}
	start := time.Now()
	if err := c.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the bomb in %v", time.Since(start))
	if pids, err := c.Pids(); err != nil || len(pids) != 0 {
		t.Errorf("after Kill: pids %v, %v", pids, err)
	}
	bomb.waitKilled(t)
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
}

func TestOOMKills(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	if p.ctrl[ctrlMemory] < 0 {
		t.Skip("no memory controller")
	}
	python, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			t.Skip("no python3")
		}
	}
	ctx := testCtx(t, 30*time.Second)
	c, err := p.Get(ctx, Limits{MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.OOMKills(); err != nil || n != 0 {
		t.Fatalf("OOMKills before = %d, %v", n, err)
	}
	hog := startBlocked(t, "exec "+python+` -c 'b = b"x" * (200 << 20)'`)
	if err := c.Attach(hog.pid()); err != nil {
		t.Fatal(err)
	}
	hog.release(t)
	hog.waitKilled(t)
	n, err := c.OOMKills()
	if err != nil || n < 1 {
		t.Errorf("OOMKills after = %d, %v; want >= 1", n, err)
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.OOMKills < 1 || st.MemoryPeakBytes < 16<<20 || st.MemoryPeakBytes > 40<<20 || st.CPUNanos == 0 {
		t.Errorf("stats %+v: want an OOM kill, a peak near 32 MiB and some CPU", st)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	// The next user starts from zero: counter and high-water mark.
	c, err = p.Get(ctx, Limits{MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	st, err = c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.OOMKills != 0 || (p.layout.Version == V1 && st.MemoryPeakBytes > 8<<20) {
		t.Errorf("stats of the next user %+v: want no OOM kill and a fresh peak", st)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
}

func TestCleanupAfterCrash(t *testing.T) {
	p := newTestPool(t, Config{Size: 2})
	ctx := testCtx(t, 20*time.Second)
	c, sleeper := withSleeper(t, ctx, p, Limits{})
	// A nested cgroup the workload made itself must go too.
	for _, d := range c.Paths() {
		if err := os.Mkdir(d+"/inner", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inner := startProc(t, exec.Command("sleep", "100"))
	for _, d := range c.Paths() {
		if err := os.WriteFile(d+"/inner/cgroup.procs", []byte(strconv.Itoa(inner.pid())), 0); err != nil {
			t.Fatal(err)
		}
	}
	// A paused sandbox: frozen on its own, below an unfrozen parent.
	if p.ctrl[ctrlFreezer] >= 0 {
		if err := c.Freeze(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A live pool's name is not up for cleanup.
	if err := Cleanup(ctx, p.layout, p.Name()); !errors.Is(err, ErrBusy) {
		t.Fatalf("Cleanup of a live pool's name: %v, want ErrBusy", err)
	}
	// The "crashed" pool is never closed before Cleanup: its process died,
	// and the kernel dropped its lock.
	p.owner.Close()
	if err := Cleanup(ctx, p.layout, p.Name()); err != nil {
		t.Fatal(err)
	}
	sleeper.waitKilled(t)
	inner.waitKilled(t)
	for _, d := range p.tree.dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Cleanup", d)
		}
	}
	// Idempotent, and fine for a name that never existed.
	if err := Cleanup(ctx, p.layout, p.Name()); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
	if err := Cleanup(ctx, p.layout, "/"+testutil.UniqueName(t)); err != nil {
		t.Errorf("Cleanup of nothing: %v", err)
	}
}

func TestNewCleansUpAPreviousRun(t *testing.T) {
	crashed := newTestPool(t, Config{Size: 1})
	ctx := testCtx(t, 20*time.Second)
	_, sleeper := withSleeper(t, ctx, crashed, Limits{})
	// The crash: the kernel drops the dead process's lock on the name.
	crashed.owner.Close()
	// Cleanups run last-registered first: the new pool is closed before
	// the crashed one's (by then empty) Close.
	p := newTestPool(t, Config{Name: crashed.Name(), Size: 2})
	sleeper.waitKilled(t)
	c2, err := p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if pids, err := c2.Pids(); err != nil || len(pids) != 0 {
		t.Errorf("cgroup of the new pool: %v, %v", pids, err)
	}
	if err := p.Put(ctx, c2); err != nil {
		t.Fatal(err)
	}
}

func TestPutAndGetMisuse(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	other := newTestPool(t, Config{Size: 1})
	ctx := testCtx(t, 10*time.Second)
	c, err := p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Put(ctx, c); !errors.Is(err, ErrInvalid) {
		t.Errorf("Put into another pool: %v, want ErrInvalid", err)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := p.Put(ctx, c); !errors.Is(err, ErrInvalid) {
		t.Errorf("second Put: %v, want ErrInvalid", err)
	}
	c, err = p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	closeAndCheck(t, p)
	if err := p.Put(ctx, c); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close: %v, want ErrClosed", err)
	}
	if _, err := p.Get(ctx, Limits{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
}

func TestConcurrentGetPut(t *testing.T) {
	p := newTestPool(t, Config{Size: 4})
	ctx := testCtx(t, 30*time.Second)
	var (
		mu   sync.Mutex
		held = map[*Cgroup]bool{}
		wg   sync.WaitGroup
	)
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				c, err := p.Get(ctx, Limits{Pids: int64(10 + (g+i)%3)})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if held[c] {
					errs <- fmt.Errorf("%s handed out twice", c.Name())
				}
				held[c] = true
				mu.Unlock()
				if _, err := c.Stats(); err != nil {
					errs <- err
				}
				mu.Lock()
				delete(held, c)
				mu.Unlock()
				if err := p.Put(ctx, c); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Every error names the file it is about.
func TestWriteErrorNamesTheFile(t *testing.T) {
	testutil.RequiresRoot(t)
	err := writeFile("/proc/self/nonexistent-cgroup-file", "1")
	if err == nil || !strings.Contains(err.Error(), "/proc/self/nonexistent-cgroup-file") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v", err)
	}
	p := newTestPool(t, Config{Size: 1})
	c, err := p.Get(context.Background(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	err = writeFile(c.procs[0], "not-a-pid")
	if err == nil || !strings.HasPrefix(err.Error(), "write "+c.procs[0]+": ") {
		t.Errorf("error %v, want write <path>: <errno>", err)
	}
	if err := p.Put(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

// TestForeignCgroupIsLeftAlone: a name that points at a cgroup a pool did
// not make (a service's) is refused, and nothing in it is touched.
func TestForeignCgroupIsLeftAlone(t *testing.T) {
	testutil.RequiresRoot(t)
	layout, err := Detect()
	if err != nil {
		t.Fatal(err)
	}
	name := "/" + testutil.UniqueName(t)
	tr, err := treeOf(layout, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range tr.dirs {
		if err := os.MkdirAll(d+"/service", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, d := range tr.dirs {
			_ = os.Remove(d + "/service")
			_ = os.Remove(d)
		}
	})
	ctx := testCtx(t, 10*time.Second)
	if err := Cleanup(ctx, layout, name); !errors.Is(err, ErrForeign) {
		t.Fatalf("Cleanup of a foreign cgroup: %v, want ErrForeign", err)
	}
	if _, err := New(ctx, Config{Name: name, Size: 1, Layout: &layout}); !errors.Is(err, ErrForeign) {
		t.Fatalf("New on a foreign cgroup: %v, want ErrForeign", err)
	}
	for _, d := range tr.dirs {
		if _, err := os.Stat(d + "/service"); err != nil {
			t.Fatalf("foreign child touched: %v", err)
		}
	}
}

// TestReset: a cgroup taken ahead of time, with a process already in it,
// gets its limits later; the OOM count starts again; misuse is refused.
func TestReset(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	if len(p.Controllers()) < numCtrl {
		t.Skipf("needs memory, cpu and pids controllers; have %v", p.Controllers())
	}
	ctx := testCtx(t, 10*time.Second)
	c, err := p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Reset(ctx, c, Limits{MemoryBytes: 64 << 20, CPUMillis: 500, Pids: 32}); err != nil {
		t.Fatal(err)
	}
	mem, _, pids := limitFiles(t, c)
	if mem != strconv.Itoa(64<<20) || pids != "32" {
		t.Errorf("limits after Reset: memory %s pids %s", mem, pids)
	}
	if n, err := c.OOMKills(); err != nil || n != 0 {
		t.Errorf("OOM kills after Reset: %d, %v", n, err)
	}
	if err := p.Reset(ctx, c, Limits{Pids: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Reset with a negative limit: %v, want ErrInvalid", err)
	}
	if err := p.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := p.Reset(ctx, c, Limits{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Reset after Put: %v, want ErrInvalid", err)
	}
	other := newTestPool(t, Config{Size: 1})
	if err := other.Reset(ctx, c, Limits{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Reset through another pool: %v, want ErrInvalid", err)
	}
}

// PutEmpty takes the caller's word only as far as the free list: a
// process the caller missed is killed by the Get that takes the cgroup
// next, and a second PutEmpty, or one into another pool, is refused.
func TestPutEmptyIsCheckedAtGet(t *testing.T) {
	p := newTestPool(t, Config{Size: 1})
	other := newTestPool(t, Config{Size: 1})
	ctx := testCtx(t, 10*time.Second)
	c, sleeper := withSleeper(t, ctx, p, Limits{})
	if err := other.PutEmpty(c); !errors.Is(err, ErrInvalid) {
		t.Errorf("PutEmpty into another pool: %v, want ErrInvalid", err)
	}
	if err := p.PutEmpty(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("PutEmpty(nil): %v, want ErrInvalid", err)
	}
	if err := p.PutEmpty(c); err != nil {
		t.Fatal(err)
	}
	if err := p.PutEmpty(c); !errors.Is(err, ErrInvalid) {
		t.Errorf("second PutEmpty: %v, want ErrInvalid", err)
	}
	if err := p.Put(ctx, c); !errors.Is(err, ErrInvalid) {
		t.Errorf("Put after PutEmpty: %v, want ErrInvalid", err)
	}
	// Not looked at yet: the process still runs.
	if err := unix.Kill(sleeper.pid(), 0); err != nil {
		t.Fatalf("PutEmpty touched the cgroup: %v", err)
	}
	c2, err := p.Get(ctx, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if c2 != c {
		t.Fatal("the cgroup was not reused")
	}
	sleeper.waitKilled(t)
	if pids, err := c2.Pids(); err != nil || len(pids) != 0 {
		t.Errorf("cgroup handed out with %v in it (%v)", pids, err)
	}
	// Back unchecked; Close kills whatever is in any of its cgroups.
	if err := p.PutEmpty(c2); err != nil {
		t.Fatal(err)
	}
	closeAndCheck(t, p)
	if _, err := p.Get(ctx, Limits{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if err := p.PutEmpty(c2); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrClosed) {
		t.Errorf("PutEmpty after Close: %v, want an error", err)
	}
}
