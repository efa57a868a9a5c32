package sandboxtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/sandbox"
)

// 6. A process that outgrows the memory limit is OOM-killed, and both
// Wait and Stats say so.
func checkMemoryLimit(t *testing.T, h *harness) {
	const limit = 32 << 20
	sb := h.create(t, sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: limit}})
	// bytearray zero-fills, so all 256 MiB are touched.
	r := run(t, sb, python(`b = bytearray(256 << 20); print(len(b))`))
	if !r.status.OOMKilled {
		t.Errorf("256 MiB under a 32 MiB limit: want OOMKilled, got %s", r)
	}
	if strings.Contains(r.stdout, "268435456") {
		t.Errorf("256 MiB allocation completed under a 32 MiB limit: %s", r)
	}
	st := stats(t, sb)
	if st.OOMKills < 1 {
		t.Errorf("Stats.OOMKills = %d after an OOM kill, want >= 1", st.OOMKills)
	}
	if st.MemoryPeakBytes > limit {
		t.Errorf("Stats.MemoryPeakBytes = %d, above the %d limit", st.MemoryPeakBytes, limit)
	}
}

// 7. The pids limit caps a fork loop; the sandbox stays destroyable and
// Destroy kills every forked process.
func checkPidsLimit(t *testing.T, h *harness) {
	const limit = 16
	sb := h.create(t, sandbox.Spec{Limits: sandbox.Limits{Pids: limit}})
	// Forks 64 sleepers, reports "forked failed", then stays alive so that
	// the sleepers are still there when Destroy comes.
	p := start(t, sb, python(`
import os, time
forked = failed = 0
for _ in range(64):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    forked += 1
print(forked, failed, flush=True)
time.sleep(60)
`))
	var most uint64
	reported := eventually(opTimeout, func() bool {
		most = max(most, stats(t, sb).Pids)
		return strings.Contains(p.stdout.String(), "\n")
	})
	if !reported {
		t.Fatalf("fork loop did not report; stdout %q, stderr %q", p.stdout, p.stderr)
	}
	var forked, failed int
	if _, err := fmt.Sscan(p.stdout.String(), &forked, &failed); err != nil {
		t.Fatalf("fork loop report %q: %v", p.stdout, err)
	}
	st := stats(t, sb)
	most = max(most, st.Pids)
	t.Logf("under pids limit %d: %d forks succeeded, %d failed; Stats.Pids peaked at %d", limit, forked, failed, most)
	if most > limit {
		t.Errorf("Stats.Pids reached %d under a limit of %d", most, limit)
	}
	if forked < 1 || forked+1 > limit || failed == 0 {
		t.Errorf("fork loop under a limit of %d: %d forks succeeded, %d failed; want 1 to %d successes and the rest failed",
			limit, forked, failed, limit-1)
	}
	if st.Pids < uint64(forked+1) {
		t.Errorf("Stats.Pids = %d with the forker and %d children alive", st.Pids, forked)
	}
	before := snapshot(sb)
	if len(before.procs) < forked+1 {
		t.Errorf("the sandbox's cgroups hold %d processes, want at least the forker and its %d children", len(before.procs), forked)
	}
	destroy(t, sb)
	before.assertGone(t)
	if r, err := p.tryWait(0); err != nil || r.status.Success() {
		t.Errorf("wait for the forker after Destroy: want it killed, got %s, %v", r, err)
	}
}

// CPU limit: a busy loop under a 0.2 CPU quota uses about 0.2 s of CPU per
// second.
func checkCPULimit(t *testing.T, h *harness) {
	sb := h.create(t, sandbox.Spec{Limits: sandbox.Limits{CPUMillis: 200}})
	start(t, sb, busyLoop)
	time.Sleep(200 * time.Millisecond) // let the quota take hold
	before := stats(t, sb).CPU
	time.Sleep(time.Second)
	used := stats(t, sb).CPU - before
	t.Logf("busy loop under a 0.2 CPU quota used %v of CPU in 1 s", used)
	if used > 500*time.Millisecond || used < 20*time.Millisecond {
		t.Errorf("busy loop under a 0.2 CPU quota used %v of CPU in 1 s, want about 200ms", used)
	}
}

// 8. Pause freezes every process until Unpause; pausing a paused sandbox
// or unpausing a running one is ErrState; a paused sandbox can be destroyed.
func checkPause(t *testing.T, h *harness) {
	sb := h.create(t, sandbox.Spec{})
	p := start(t, sb, busyLoop)
	if !eventually(5*time.Second, func() bool { return stats(t, sb).CPU >= 50*time.Millisecond }) {
		t.Fatalf("busy loop used only %v of CPU in 5 s", stats(t, sb).CPU)
	}

	if err := do("pause", sb.Pause); err != nil {
		t.Fatalf("pause: %v", err)
	}
	frozen := stats(t, sb).CPU
	time.Sleep(300 * time.Millisecond)
	// Pause returns only once the freeze is complete: no tolerance beyond
	// rounding.
	if moved := stats(t, sb).CPU - frozen; moved > time.Millisecond {
		t.Errorf("paused sandbox used %v of CPU in 300ms", moved)
	}
	if err := do("pause", sb.Pause); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("pause of a paused sandbox: want ErrState, got %v", err)
	}
	if r, err := p.tryWait(200 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait on a paused process: want the context's deadline, got %s, %v", r, err)
	}

	if err := do("unpause", sb.Unpause); err != nil {
		t.Fatalf("unpause: %v", err)
	}
	thawed := stats(t, sb).CPU
	time.Sleep(300 * time.Millisecond)
	if moved := stats(t, sb).CPU - thawed; moved < 50*time.Millisecond {
		t.Errorf("unpaused busy loop used only %v of CPU in 300ms", moved)
	}
	if err := do("unpause", sb.Unpause); !errors.Is(err, sandbox.ErrState) {
		t.Errorf("unpause of a running sandbox: want ErrState, got %v", err)
	}

	if err := do("pause", sb.Pause); err != nil {
		t.Fatalf("pause after unpause: %v", err)
	}
	before := snapshot(sb)
	destroy(t, sb)
	before.assertGone(t)
	if r, err := p.tryWait(0); err != nil || r.status.Success() {
		t.Errorf("wait for a process destroyed while paused: want it killed, got %s, %v", r, err)
	}
}
