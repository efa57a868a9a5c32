//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/sandbox"
)

type demoCmd struct {
	Backend string `help:"lean or libcontainer." default:"lean" enum:"lean,libcontainer"`
	N       int    `help:"How many create -> run /bin/true -> destroy cycles to time." default:"200"`
}

// demoScript runs inside the sandbox and shows what it can and cannot see.
const demoScript = `
echo "hostname:      $(hostname)"
echo "user:          $(id)"
echo "root:          $(ls / | tr '\n' ' ')"
echo "processes:     $(ls /proc | grep -c '^[0-9]') visible ($(ls -d /proc/[0-9]* | tr '\n' ' '))"
echo "code (ro):     $(cat /code/hello.txt)"
touch /usr/sockfaas-probe 2>/dev/null && echo "base:          WRITABLE (unexpected)" || echo "base:          read-only (touch /usr/... refused)"
echo ok > /scratch/out && echo "scratch:       writable"
test -e /root || test -e /work || echo "host files:    /root and /work are not there"
grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr '\n' ' '; echo
`

func (c *demoCmd) Run(ctx context.Context, g *globals, log zerolog.Logger) error {
	code, err := os.MkdirTemp("", "sockfaas-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(code)
	if err := os.WriteFile(filepath.Join(code, "hello.txt"), []byte("hello from a read-only bind\n"), 0o644); err != nil {
		return err
	}
	_ = os.Chmod(code, 0o755)

	t0 := time.Now()
	be, err := newBackend(ctx, g, log, c.Backend)
	if err != nil {
		return err
	}
	defer func() { _ = be.Close(context.Background()) }()
	fmt.Printf("sockfaas demo: %s backend ready in %s\n\n", be.Name(), since(t0))

	spec := sandbox.Spec{
		Root:     fsbind.Spec{Binds: []fsbind.Bind{{Source: code, Dest: "/code"}}},
		Hostname: "demo",
		Limits:   sandbox.Limits{MemoryBytes: 128 << 20, Pids: 64},
	}
	t0 = time.Now()
	sb, err := be.Create(ctx, "demo", spec)
	if err != nil {
		return err
	}
	created := since(t0)
	var out bytes.Buffer
	t0 = time.Now()
	p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/sh", "-c", demoScript}, Stdout: &out, Stderr: &out})
	if err != nil {
		return err
	}
	st, err := p.Wait(ctx)
	if err != nil {
		return err
	}
	ran := since(t0)
	stats, _ := sb.Stats(ctx)
	t0 = time.Now()
	if err := sb.Destroy(ctx); err != nil {
		return err
	}
	fmt.Printf("A sandbox with a 128 MiB memory limit and 64 tasks at most, running /bin/sh:\n\n%s\n", out.String())
	fmt.Printf("exit code %d; peak memory %d KiB\ncreate %s, run script %s, destroy %s\n\n", st.Code, stats.MemoryPeakBytes>>10, created, ran, since(t0))

	fmt.Printf("Timing %d create -> run /bin/true -> destroy cycles...\n", c.N)
	lat := make([]time.Duration, 0, c.N)
	for i := 0; i < c.N && ctx.Err() == nil; i++ {
		t := time.Now()
		sb, err := be.Create(ctx, fmt.Sprintf("demo-%d", i), sandbox.Spec{})
		if err != nil {
			return err
		}
		p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/true"}})
		if err == nil {
			_, err = p.Wait(ctx)
		}
		if derr := sb.Destroy(ctx); err == nil {
			err = derr
		}
		if err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	if len(lat) == 0 {
		return ctx.Err()
	}
	slices.Sort(lat)
	fmt.Printf("p50 %v   p99 %v   (benchmarks: make bench)\n", lat[len(lat)/2], lat[len(lat)*99/100])
	return nil
}
