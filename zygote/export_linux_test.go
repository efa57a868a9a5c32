package zygote

// SetForkTrace installs (f non-nil) or removes a hook that receives every
// fork's checkpoints, in time order, as names and CLOCK_MONOTONIC
// nanoseconds, followed by counters (names starting with '#') and their
// values. Not safe to call while forks run.
func SetForkTrace(f func(names []string, ns []int64)) {
	if f == nil {
		traceHook = nil
		return
	}
	traceHook = func(marks []traceMark) {
		names := make([]string, len(marks))
		ns := make([]int64, len(marks))
		for i, m := range marks {
			names[i], ns[i] = m.Name, m.NS
		}
		f(names, ns)
	}
}
