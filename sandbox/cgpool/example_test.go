package cgpool_test

import (
	"context"
	"os"
	"os/exec"

	"github.com/rs/zerolog"
	"github.com/sockfaas/sockfaas/sandbox/cgpool"
)

// A process must be in the cgroup before it runs anything it should be
// limited in: start it blocked (here on its stdin), attach it, then let it
// go. On cgroup v2, Cgroup.OpenDir with SysProcAttr.UseCgroupFD makes the
// child be born in the cgroup instead.
func Example() {
	ctx := context.Background()
	pool, err := cgpool.New(ctx, cgpool.Config{Name: "/sockfaas-example", Size: 4, Logger: zerolog.New(os.Stderr)})
	if err != nil {
		return
	}
	defer pool.Close(ctx)

	cg, err := pool.Get(ctx, cgpool.Limits{MemoryBytes: 256 << 20, CPUMillis: 1000, Pids: 64})
	if err != nil {
		return
	}
	cmd := exec.Command("/bin/sh", "-c", "read go && exec python3 handler.py")
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		_ = pool.Put(ctx, cg)
		return
	}
	if err := cg.Attach(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
	} else {
		_, _ = stdin.Write([]byte("go\n"))
	}
	_ = stdin.Close()

	// ... serve requests; cg.Stats(), cg.Freeze(ctx) / cg.Thaw() ...

	_ = pool.Put(ctx, cg) // kills whatever is left and recycles the cgroup
	_ = cmd.Wait()
}
