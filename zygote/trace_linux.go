package zygote

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Fork tracing: with SOCKFAAS_ZYGOTE_TRACE set in the Go process's
// environment (or a hook installed by a test), every fork asks the zygote
// for checkpoints (runtime/forkserver.py marks them with
// time.perf_counter_ns, which is CLOCK_MONOTONIC, in the zygote and in the
// child) and merges them with its own; the result is logged at debug level
// ("fork trace", one field per step: microseconds since the previous
// checkpoint). Off, it costs nothing but a branch per step.
var (
	traceEnv  = os.Getenv("SOCKFAAS_ZYGOTE_TRACE") != ""
	traceHook func([]traceMark)
)

// forkTracer collects a fork's Go-side checkpoints; nil when not tracing.
type forkTracer struct{ marks []traceMark }

func newForkTracer() *forkTracer {
	if !traceEnv && traceHook == nil {
		return nil
	}
	t := &forkTracer{}
	t.mark("go_start")
	return t
}

func monotonicNS() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func (t *forkTracer) mark(name string) {
	if t != nil {
		t.marks = append(t.marks, traceMark{name, monotonicNS()})
	}
}

// finish merges the zygote's marks, sorts them by time and reports them.
func (t *forkTracer) finish(z *Zygote, remote []traceMark) {
	if t == nil {
		return
	}
	// Marks named "#..." are counters (the child's minor faults), not times.
	var counters []traceMark
	all := t.marks
	for _, m := range remote {
		if strings.HasPrefix(m.Name, "#") {
			counters = append(counters, m)
		} else {
			all = append(all, m)
		}
	}
	slices.SortStableFunc(all, func(a, b traceMark) int {
		switch {
		case a.NS < b.NS:
			return -1
		case a.NS > b.NS:
			return 1
		}
		return 0
	})
	if traceHook != nil {
		traceHook(append(all, counters...))
	}
	if traceEnv {
		var sb strings.Builder
		for i := 1; i < len(all); i++ {
			fmt.Fprintf(&sb, "%s=%.0f ", all[i].Name, float64(all[i].NS-all[i-1].NS)/1e3)
		}
		for _, c := range counters {
			fmt.Fprintf(&sb, "%s=%d ", c.Name, c.NS)
		}
		z.log.Debug().Str("zygote", z.cfg.ID).Str("steps_us", strings.TrimSpace(sb.String())).
			Float64("total_us", float64(all[len(all)-1].NS-all[0].NS)/1e3).Msg("fork trace")
	}
}
