package sandboxtest

import (
	"testing"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
)

// check is one conformance test. Each gets a fresh backend so that one
// backend's failure cannot spill into the next check's results.
type check struct {
	name string
	run  func(t *testing.T, h *harness)
}

var checks = []check{
	{"SeesOnlyItsBinds", checkSeesOnlyItsBinds},
	{"ReadOnlyBaseCannotBeWritten", checkReadOnlyBase},
	{"SeesOnlyItsOwnProcesses", checkOwnProcesses},
	{"OwnHostname", checkOwnHostname},
	{"DefaultUserIsUnprivileged", checkUnprivileged},
	{"UIDZeroCannotChangeHostKernelSettings", checkProcSysReadOnly},
	{"MemoryLimitOOMKills", checkMemoryLimit},
	{"PidsLimitStopsForkBomb", checkPidsLimit},
	{"CPULimitThrottles", checkCPULimit},
	{"PauseStopsProgressUnpauseResumes", checkPause},
	{"DestroyLeavesNothingBehind", checkDestroy},
	{"ExitCodesAndSignals", checkExitStatus},
	{"SecondProcessSharesSandboxOrIsRefused", checkSecondProcess},
	{"RejectsBadInput", checkBadInput},
	{"StdioEnvAndDir", checkStdioEnvDir},
	{"JoinsGivenNetworkNamespace", checkJoinsNetNS},
	{"ConcurrentSandboxes", checkConcurrency},
	{"CloseDestroysEverything", checkClose},
}

// Run runs every conformance check against backends made by newBackend.
//
// newBackend is called once per check (each check is a subtest), so it must
// give each call its own state directory and cgroup name. The suite Closes
// every backend it gets and checks Close's error; a newBackend that also
// registers a Close of its own relies on the backend's Close being
// idempotent.
// Checks run one after another: the CPU, OOM and pause checks measure, and
// a neighbour's load would make them flaky.
//
// Every sandbox a check creates has a unique ID and is destroyed when the
// check ends; the suite then verifies that none of its processes, mounts or
// cgroup members remain. Every call into the backend is bounded (20 s): a
// backend that ignores its context fails the check instead of hanging it.
//
// The suite needs root and is skipped without it.
func Run(t *testing.T, newBackend func(t *testing.T) sandbox.Backend) {
	testutil.RequiresRoot(t)
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			c.run(t, open(t, newBackend))
		})
	}
}
