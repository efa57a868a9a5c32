package sandboxtest

import (
	"testing"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
)

// check is one conformance test. Each gets a fresh backend so that one
// backend's failure cannot spill into the next check's results.
type check struct {
	name   string
	run    func(t *testing.T, h *harness)
	limits bool // needs the memory, pids or cpu controller
}

var checks = []check{
	{name: "SeesOnlyItsBinds", run: checkSeesOnlyItsBinds},
	{name: "ReadOnlyBaseCannotBeWritten", run: checkReadOnlyBase},
	{name: "SeesOnlyItsOwnProcesses", run: checkOwnProcesses},
	{name: "OwnHostname", run: checkOwnHostname},
	{name: "DefaultUserIsUnprivileged", run: checkUnprivileged},
	{name: "UIDZeroCannotChangeHostKernelSettings", run: checkProcSysReadOnly},
	{name: "InheritsNoHostDescriptors", run: checkNoInheritedFDs},
	{name: "MemoryLimitOOMKills", run: checkMemoryLimit, limits: true},
	{name: "PidsLimitStopsForkBomb", run: checkPidsLimit, limits: true},
	{name: "CPULimitThrottles", run: checkCPULimit, limits: true},
	{name: "PauseStopsProgressUnpauseResumes", run: checkPause},
	{name: "DestroyLeavesNothingBehind", run: checkDestroy},
	{name: "ExitCodesAndSignals", run: checkExitStatus},
	{name: "SecondProcessSharesSandboxOrIsRefused", run: checkSecondProcess},
	{name: "RejectsBadInput", run: checkBadInput},
	{name: "StdioEnvAndDir", run: checkStdioEnvDir},
	{name: "JoinsGivenNetworkNamespace", run: checkJoinsNetNS},
	{name: "ConcurrentSandboxes", run: checkConcurrency},
	{name: "CloseDestroysEverything", run: checkClose},
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
	RunWith(t, newBackend, Options{})
}

// Options adapt the suite to what a backend's environment can do.
type Options struct {
	// NoLimits skips the checks that need the memory, pids and cpu
	// controllers, for a cgroup hierarchy that has none enabled (the
	// unified hierarchy of a hybrid v1 host). Everything else still runs.
	NoLimits bool
}

// RunWith is Run with Options.
func RunWith(t *testing.T, newBackend func(t *testing.T) sandbox.Backend, o Options) {
	testutil.RequiresRoot(t)
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.limits && o.NoLimits {
				t.Skip("skipping: the cgroup hierarchy under test has no memory, pids or cpu controller")
			}
			c.run(t, open(t, newBackend))
		})
	}
}
