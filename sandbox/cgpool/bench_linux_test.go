package cgpool

import (
	"context"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// The two benchmarks measure the same outcome side by side: an empty
// cgroup with limits, used (with no process) and given up.

var benchLimits = Limits{MemoryBytes: 128 << 20, CPUMillis: 500, Pids: 64}

// BenchmarkGetPut is reuse: Get from a warm pool (the limits are already
// in place, so only the per-use peak reset and OOM baseline are done) and
// Put (check it is empty).
func BenchmarkGetPut(b *testing.B) {
	p := newTestPool(b, Config{Size: 16})
	l := p.usable(benchLimits)
	ctx := context.Background()
	for b.Loop() {
		c, err := p.Get(ctx, l)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Put(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetPutChangingLimits is reuse when each user wants other
// limits: every Get rewrites the limit files.
func BenchmarkGetPutChangingLimits(b *testing.B) {
	p := newTestPool(b, Config{Size: 1})
	ls := [2]Limits{p.usable(benchLimits), p.usable(Limits{MemoryBytes: 256 << 20, CPUMillis: 1000, Pids: 128})}
	ctx := context.Background()
	i := 0
	for b.Loop() {
		c, err := p.Get(ctx, ls[i%2])
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Put(ctx, c); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkCreateRemove is the fresh path: mkdir in every hierarchy, write
// the limits (and the same per-use setup), then rmdir.
func BenchmarkCreateRemove(b *testing.B) {
	p := newTestPool(b, Config{Size: 1})
	l := p.usable(benchLimits)
	n := 0
	for b.Loop() {
		c := p.newCgroup(p.name + "/fresh-" + strconv.Itoa(n))
		n++
		for _, d := range c.paths {
			if err := unix.Mkdir(d, 0o755); err != nil {
				b.Fatal(&os.PathError{Op: "mkdir", Path: d, Err: err})
			}
		}
		if err := c.prepare(l); err != nil {
			b.Fatal(err)
		}
		c.closeFiles()
		for _, d := range c.paths {
			if err := unix.Rmdir(d); err != nil {
				b.Fatal(&os.PathError{Op: "rmdir", Path: d, Err: err})
			}
		}
	}
}

// usable drops the limits whose controller the pool lacks.
func (p *Pool) usable(l Limits) Limits {
	if p.ctrl[ctrlMemory] < 0 {
		l.MemoryBytes = 0
	}
	if p.ctrl[ctrlCPU] < 0 {
		l.CPUMillis = 0
	}
	if p.ctrl[ctrlPids] < 0 {
		l.Pids = 0
	}
	return l
}
