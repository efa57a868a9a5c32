//go:build linux

package benchmarks

import (
	"context"
	"fmt"
	"os/exec"
	"testing"

	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
)

// lifecycle is one create -> run /bin/true -> wait -> destroy.
func lifecycle(ctx context.Context, be sandbox.Backend, id string, spec sandbox.Spec) error {
	sb, err := be.Create(ctx, id, spec)
	if err != nil {
		return err
	}
	p, err := sb.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/true"}})
	if err == nil {
		var st sandbox.ExitStatus
		if st, err = p.Wait(ctx); err == nil && !st.Success() {
			err = fmt.Errorf("/bin/true: %+v", st)
		}
	}
	if derr := sb.Destroy(ctx); err == nil {
		err = derr
	}
	return err
}

// BenchmarkLifecycle times create -> run /bin/true -> wait -> destroy for
// every variant in one run, and a plain process (fork+exec+wait of
// /bin/true, no isolation) as the floor. lean uses the default namespaces
// (mount, pid, ipc, uts; networking comes from pre-built shared
// namespaces) and the backend's defaults, parked helpers included: work
// done ahead of time, on the other core, as crun and runc cannot. Like
// theirs, its /bin/true is PID 1 of its namespace, with no init in front
// of it (sandbox.ProcessSpec.Init is false). lean-unparked turns
// parking off (lean.WithParked(0)): what a sandbox costs when nothing is
// ready. lean-netns adds a fresh network namespace per sandbox, as
// libcontainer, crun and runc all do, for a like-for-like comparison.
func BenchmarkLifecycle(b *testing.B) {
	requireRoot(b)
	ctx := context.Background()
	backends := []struct {
		name string
		make func(*testing.B) sandbox.Backend
		spec sandbox.Spec
	}{
		{"lean", newLean, sandbox.Spec{}},
		{"lean-unparked", func(b *testing.B) sandbox.Backend { return newLeanBackend(b, lean.WithParked(0)) }, sandbox.Spec{}},
		{"lean-netns", newLean, sandbox.Spec{Namespaces: sandbox.DefaultNamespaces | sandbox.NSNet}},
		{"libcontainer", newLibct, sandbox.Spec{}},
	}
	for _, workers := range []int{1, 2} {
		for _, bk := range backends {
			name := bk.name
			if workers > 1 {
				name = fmt.Sprintf("%s-parallel-%d", bk.name, workers)
			}
			b.Run(name, func(b *testing.B) {
				be := bk.make(b)
				timed(b, workers, func(i int) error { return lifecycle(ctx, be, fmt.Sprintf("b%d", i), bk.spec) }).report(b)
			})
		}
		benchPeers(b, workers)
		// The floor: a plain fork+exec+wait of /bin/true from Go, no
		// isolation at all. What a sandbox costs is the difference.
		name := "process"
		if workers > 1 {
			name = fmt.Sprintf("process-parallel-%d", workers)
		}
		b.Run(name, func(b *testing.B) {
			timed(b, workers, func(int) error { return exec.Command("/bin/true").Run() }).report(b)
		})
	}
}
