package cgpool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// cfsPeriod is the CFS bandwidth period, in µs, that CPU quotas are
// expressed against (the kernel's default).
const cfsPeriod = 100000

// Cgroup is one cgroup of the pool, present in every hierarchy the pool
// uses. Between Get and Put it belongs to the caller; its methods are safe
// for concurrent use.
type Cgroup struct {
	pool  *Pool
	name  string
	paths []string // host dirs, one per hierarchy
	procs []string // their cgroup.procs
	files cgFiles

	inUse bool // guarded by pool.mu
	// unchecked: given back with PutEmpty, not yet checked for
	// leftovers. Guarded by pool.mu.
	unchecked bool

	mu        sync.Mutex
	cur       Limits // what the limit files hold
	periodSet bool   // v1 cpu.cfs_period_us written
	oomBase   uint64
	frozen    bool
	// peakFD is the high-water mark file, kept open (see resetPeak): on
	// v2 a write resets the mark seen through that fd only (Linux 6.12+).
	peakFD        int
	peakResetable bool
	// oomFD is the OOM counter file, kept open once read: one pread per
	// Wait instead of open, read and close.
	oomFD int
	// join are the cgroup.procs files, open for writing (JoinFiles).
	join []*os.File
	// dir is the v2 directory, open for clone3 (JoinDir).
	dir *os.File
}

// cgFiles are the paths of the files the pool reads and writes; "" when
// the controller is unavailable.
type cgFiles struct {
	freezeDir   string // v1 freezer dir / v2 dir
	memLimit    string // memory.limit_in_bytes | memory.max
	memUsage    string // memory.usage_in_bytes | memory.current
	memPeak     string // memory.max_usage_in_bytes | memory.peak
	memForce    string // v1 memory.force_empty
	oom         string // memory.oom_control | memory.events
	cpuQuota    string // cpu.cfs_quota_us | cpu.max
	cpuPeriod   string // v1 cpu.cfs_period_us
	cpuUsage    string // cpuacct.usage | cpu.stat
	pidsMax     string
	pidsCurrent string
	kill        string // v2 cgroup.kill
	events      string // v2 cgroup.events
}

func (p *Pool) newCgroup(name string) *Cgroup {
	c := &Cgroup{pool: p, name: name, peakFD: -1, oomFD: -1}
	leaf := path.Base(name)
	for _, d := range p.tree.dirs {
		c.paths = append(c.paths, d+"/"+leaf)
		c.procs = append(c.procs, d+"/"+leaf+"/cgroup.procs")
	}
	file := func(ctrl int, v1, v2 string) string {
		i := p.ctrl[ctrl]
		if i < 0 {
			return ""
		}
		if p.v2 {
			return c.paths[i] + "/" + v2
		}
		return c.paths[i] + "/" + v1
	}
	f := &c.files
	if i := p.ctrl[ctrlFreezer]; i >= 0 {
		f.freezeDir = c.paths[i]
	}
	f.memLimit = file(ctrlMemory, "memory.limit_in_bytes", "memory.max")
	f.memUsage = file(ctrlMemory, "memory.usage_in_bytes", "memory.current")
	f.memPeak = file(ctrlMemory, "memory.max_usage_in_bytes", "memory.peak")
	f.oom = file(ctrlMemory, "memory.oom_control", "memory.events")
	f.cpuQuota = file(ctrlCPU, "cpu.cfs_quota_us", "cpu.max")
	f.cpuUsage = file(ctrlCPUAcct, "cpuacct.usage", "cpu.stat")
	f.pidsMax = file(ctrlPids, "pids.max", "pids.max")
	f.pidsCurrent = file(ctrlPids, "pids.current", "pids.current")
	if p.v2 {
		f.events = c.paths[0] + "/cgroup.events"
		if p.hasKill {
			f.kill = c.paths[0] + "/cgroup.kill"
		}
	} else {
		f.memForce = file(ctrlMemory, "memory.force_empty", "")
		f.cpuPeriod = file(ctrlCPU, "cpu.cfs_period_us", "")
	}
	return c
}

// prepare applies l, writing only what changes, then starts the per-use
// counters. A fresh cgroup is unlimited, which is what the zero cur says.
func (c *Cgroup) prepare(l Limits) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	v2 := c.pool.v2
	f := &c.files
	if l.MemoryBytes != c.cur.MemoryBytes {
		if err := c.setMemory(l.MemoryBytes); err != nil {
			return err
		}
		c.cur.MemoryBytes = l.MemoryBytes
	}
	if l.CPUMillis != c.cur.CPUMillis {
		val := "max " + strconv.Itoa(cfsPeriod)
		if !v2 {
			val = "-1"
			if !c.periodSet {
				if err := writeFile(f.cpuPeriod, strconv.Itoa(cfsPeriod)); err != nil {
					return err
				}
				c.periodSet = true
			}
		}
		if l.CPUMillis > 0 {
			// 1000 millis = one CPU = a whole period; the kernel's
			// floor is 1ms per period.
			q := max(l.CPUMillis*cfsPeriod/1000, 1000)
			val = strconv.FormatInt(q, 10)
			if v2 {
				val += " " + strconv.Itoa(cfsPeriod)
			}
		}
		if err := writeFile(f.cpuQuota, val); err != nil {
			return err
		}
		c.cur.CPUMillis = l.CPUMillis
	}
	if l.Pids != c.cur.Pids {
		val := "max"
		if l.Pids > 0 {
			val = strconv.FormatInt(l.Pids, 10)
		}
		if err := writeFile(f.pidsMax, val); err != nil {
			return err
		}
		c.cur.Pids = l.Pids
	}
	if f.memPeak != "" {
		if err := c.resetPeak(); err != nil {
			return err
		}
	}
	if f.oom != "" {
		n, err := c.readOOMLocked()
		if err != nil {
			return err
		}
		c.oomBase = n
	}
	return nil
}

// readOOMLocked reads the kernel's OOM kill counter through oomFD.
func (c *Cgroup) readOOMLocked() (uint64, error) {
	if c.oomFD < 0 {
		fd, err := openFile(c.files.oom, unix.O_RDONLY)
		if err != nil {
			return 0, err
		}
		c.oomFD = fd
	}
	var a [512]byte
	b, err := readFD(c.oomFD, c.files.oom, a[:0], true)
	if err != nil {
		return 0, err
	}
	return keyedValue(c.files.oom, b, "oom_kill")
}

func (c *Cgroup) setMemory(n int64) error {
	if c.pool.v2 {
		val := "max"
		if n > 0 {
			val = strconv.FormatInt(n, 10)
		}
		return writeFile(c.files.memLimit, val)
	}
	val := "-1"
	if n > 0 {
		val = strconv.FormatInt(n, 10)
	}
	err := writeFile(c.files.memLimit, val)
	if errors.Is(err, unix.EBUSY) {
		// Below what is still charged (page cache of the previous
		// user): the cgroup is empty, so drop the charge and retry.
		if ferr := writeFile(c.files.memForce, "0"); ferr != nil {
			return errors.Join(err, ferr)
		}
		err = writeFile(c.files.memLimit, val)
	}
	return err
}

// resetPeak makes the memory high-water mark start from now, through
// peakFD, opened once: v1 resets memory.max_usage_in_bytes on a write of
// "0", v2 (Linux 6.12+) memory.peak, for that fd only, on "reset". c.mu is
// held.
func (c *Cgroup) resetPeak() error {
	v2 := c.pool.v2
	if c.peakFD < 0 {
		fd, err := openFile(c.files.memPeak, unix.O_RDWR)
		c.peakResetable = err == nil
		if err != nil {
			if !v2 {
				return err
			}
			// Before 6.12 memory.peak is read-only; before 5.19
			// it does not exist. Stats falls back accordingly.
			if fd, err = openFile(c.files.memPeak, unix.O_RDONLY); err != nil {
				return nil
			}
		}
		c.peakFD = fd
	}
	if !c.peakResetable {
		return nil
	}
	val := "reset"
	if !v2 {
		val = "0"
	}
	return writeFD(c.peakFD, c.files.memPeak, val)
}

// closeFiles releases the fds the cgroup keeps open.
func (c *Cgroup) closeFiles() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peakFD >= 0 {
		_ = unix.Close(c.peakFD)
		c.peakFD = -1
	}
	if c.oomFD >= 0 {
		_ = unix.Close(c.oomFD)
		c.oomFD = -1
	}
	for _, f := range c.join {
		_ = f.Close()
	}
	c.join = nil
	if c.dir != nil {
		_ = c.dir.Close()
		c.dir = nil
	}
}

// Name is the absolute cgroup path, e.g. "/sockfaas/cg-3".
func (c *Cgroup) Name() string { return c.name }

// Paths are the cgroup's host directories: one per v1 hierarchy (one for
// co-mounted controllers), or one on v2.
func (c *Cgroup) Paths() []string { return append([]string(nil), c.paths...) }

// ProcsFiles are the cgroup.procs files, one per directory of Paths.
// Writing a pid to each of them moves that process in; a process writing
// "0" moves itself.
func (c *Cgroup) ProcsFiles() []string { return append([]string(nil), c.procs...) }

// OpenProcs opens the cgroup.procs files for writing, so that another
// process (a zygote's child) can be handed the fds and write "0" to each to
// join the cgroup. The caller closes them.
func (c *Cgroup) OpenProcs() ([]*os.File, error) {
	var out []*os.File
	for _, p := range c.procs {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("open cgroup %s: %w", c.name, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// JoinFiles returns the cgroup.procs files, one per directory of Paths,
// open for writing: a process that writes "0" to each joins the cgroup.
// Unlike OpenProcs they are opened once and stay open while the cgroup is
// in the pool, which makes joining a new process cheap; the caller must
// not close them, and must not use them after Put.
func (c *Cgroup) JoinFiles() ([]*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.join != nil {
		return c.join, nil
	}
	files, err := c.OpenProcs()
	if err != nil {
		return nil, err
	}
	c.join = files
	return files, nil
}

// Attach moves process pid (all its threads) into the cgroup in every
// hierarchy. On error it may be in some hierarchies and not others.
func (c *Cgroup) Attach(pid int) error {
	s := strconv.Itoa(pid)
	for _, p := range c.procs {
		if err := writeFile(p, s); err != nil {
			return fmt.Errorf("attach %d to cgroup %s: %w", pid, c.name, err)
		}
	}
	return nil
}

// OpenDir opens the cgroup's directory for clone3(CLONE_INTO_CGROUP)
// (syscall.SysProcAttr UseCgroupFD/CgroupFD), so that a child is born in
// the cgroup. Only on v2; ErrUnsupported on v1.
func (c *Cgroup) OpenDir() (*os.File, error) {
	if !c.pool.v2 {
		return nil, fmt.Errorf("open cgroup %s dir for clone3: cgroup v1: %w", c.name, ErrUnsupported)
	}
	f, err := os.OpenFile(c.paths[0], os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", c.name, err)
	}
	return f, nil
}

// JoinDir returns the cgroup's directory open for clone3(CLONE_INTO_CGROUP),
// as OpenDir does, but opened once and kept open while the cgroup is in
// the pool, as JoinFiles is for v1: the caller must not close it, and must
// not use it after Put. Only on v2; ErrUnsupported on v1.
func (c *Cgroup) JoinDir() (*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir != nil {
		return c.dir, nil
	}
	f, err := c.OpenDir()
	if err != nil {
		return nil, err
	}
	c.dir = f
	return f, nil
}

// Pids lists the processes in the cgroup (in any of its hierarchies),
// sorted.
func (c *Cgroup) Pids() ([]int, error) {
	pids, err := unionPids(c.procs, false)
	if err != nil {
		return nil, fmt.Errorf("list processes of cgroup %s: %w", c.name, err)
	}
	return pids, nil
}

// Freeze stops every process in the cgroup and returns once the kernel
// reports it frozen, or with ctx's error (the cgroup is then thawed again).
// On v2 that can take ~10 ms: keep it off request paths.
func (c *Cgroup) Freeze(ctx context.Context) error {
	dir := c.files.freezeDir
	if dir == "" {
		return fmt.Errorf("freeze cgroup %s: no freezer: %w", c.name, ErrUnsupported)
	}
	c.mu.Lock()
	c.frozen = true
	c.mu.Unlock()
	if err := freeze(ctx, c.pool.v2, dir); err != nil {
		if terr := thaw(c.pool.v2, dir); terr == nil {
			c.mu.Lock()
			c.frozen = false
			c.mu.Unlock()
		}
		return fmt.Errorf("freeze cgroup %s: %w", c.name, err)
	}
	return nil
}

// Thaw lets a frozen cgroup run again. It does not wait.
func (c *Cgroup) Thaw() error {
	dir := c.files.freezeDir
	if dir == "" {
		return fmt.Errorf("thaw cgroup %s: no freezer: %w", c.name, ErrUnsupported)
	}
	if err := thaw(c.pool.v2, dir); err != nil {
		return fmt.Errorf("thaw cgroup %s: %w", c.name, err)
	}
	c.mu.Lock()
	c.frozen = false
	c.mu.Unlock()
	return nil
}

// Kill kills every process in the cgroup, frozen ones and fork bombs
// included, and returns once cgroup.procs is empty in every hierarchy, or
// with ctx's error. The cgroup is left thawed.
func (c *Cgroup) Kill(ctx context.Context) error {
	k := killer{
		v2:        c.pool.v2,
		killFile:  c.files.kill,
		freezeDir: c.files.freezeDir,
		procs:     c.procs,
	}
	err := k.run(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen {
		if terr := thaw(c.pool.v2, c.files.freezeDir); terr != nil {
			err = errors.Join(err, terr)
		} else {
			c.frozen = false
		}
	}
	if err != nil {
		return fmt.Errorf("kill processes of cgroup %s: %w", c.name, err)
	}
	return nil
}

// Stats reads the cgroup's usage. MemoryPeakBytes is the high-water mark
// since Get on v1 and on v2 from Linux 6.12; on older v2 kernels it is the
// cgroup's lifetime peak. MemoryBytes includes page cache, some of which
// may be left from an earlier user of the cgroup.
func (c *Cgroup) Stats() (Stats, error) {
	var s Stats
	var err error
	f := &c.files
	read := func(dst *uint64, p string, get func(string) (uint64, error)) {
		if err == nil && p != "" {
			*dst, err = get(p)
		}
	}
	read(&s.MemoryBytes, f.memUsage, readUint)
	read(&s.Pids, f.pidsCurrent, readUint)
	if c.pool.v2 {
		read(&s.CPUNanos, f.cpuUsage, func(p string) (uint64, error) {
			us, err := readKeyed(p, "usage_usec")
			return us * 1000, err
		})
	} else {
		read(&s.CPUNanos, f.cpuUsage, readUint)
	}
	if err == nil && f.memPeak != "" {
		s.MemoryPeakBytes, err = c.peak()
	}
	if err == nil && f.oom != "" {
		s.OOMKills, err = c.oomKills()
	}
	if err != nil {
		return Stats{}, fmt.Errorf("stats of cgroup %s: %w", c.name, err)
	}
	return s, nil
}

func (c *Cgroup) peak() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peakFD >= 0 {
		var a [32]byte
		b, err := readFD(c.peakFD, c.files.memPeak, a[:0], true)
		if err != nil {
			return 0, err
		}
		return parseUint(c.files.memPeak, trimNL(b))
	}
	n, err := readUint(c.files.memPeak)
	if c.pool.v2 && errors.Is(err, os.ErrNotExist) {
		return 0, nil // kernel before 5.19
	}
	return n, err
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// OOMKills counts the processes the kernel's OOM killer killed in the
// cgroup since Get; 0 without a memory controller.
func (c *Cgroup) OOMKills() (uint64, error) {
	if c.files.oom == "" {
		return 0, nil
	}
	n, err := c.oomKills()
	if err != nil {
		return 0, fmt.Errorf("oom kills of cgroup %s: %w", c.name, err)
	}
	return n, nil
}

func (c *Cgroup) oomKills() (uint64, error) {
	c.mu.Lock()
	n, err := c.readOOMLocked()
	base := c.oomBase
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if n < base {
		return 0, nil
	}
	return n - base, nil
}
