package sandboxtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
)

// checkJoinsNetNS: with Spec.NetNS a sandbox lives in that existing network
// namespace, not the host's and not one of its own; with NSNet it gets a
// private one that is neither.
func checkJoinsNetNS(t *testing.T, h *harness) {
	// A namespace held by a sleeping process, standing in for a pre-built one.
	holder := exec.Command("unshare", "--net", "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Fatalf("start namespace holder: %v", err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	hostNS, _ := os.Readlink("/proc/self/ns/net")
	nsPath := fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)
	var want string
	if !eventually(5*time.Second, func() bool {
		want, _ = os.Readlink(nsPath)
		return want != "" && want != hostNS
	}) {
		t.Fatal("namespace holder never left the host's network namespace")
	}

	r := h.runOnce(t, sandbox.Spec{NetNS: nsPath}, sh("readlink /proc/self/ns/net"))
	mustSucceed(t, "readlink in joined namespace", r)
	if got := strings.TrimSpace(r.stdout); got != want {
		t.Fatalf("sandbox with NetNS %s is in %q, want %q", nsPath, got, want)
	}

	r = h.runOnce(t, sandbox.Spec{Namespaces: sandbox.DefaultNamespaces | sandbox.NSNet}, sh("readlink /proc/self/ns/net"))
	mustSucceed(t, "readlink in private namespace", r)
	if got := strings.TrimSpace(r.stdout); got == want || got == hostNS || got == "" {
		t.Fatalf("sandbox with NSNet is in %q (host %q, holder %q)", got, hostNS, want)
	}

	if _, err := h.createID(t, testutil.UniqueName(t), sandbox.Spec{NetNS: "relative/ns"}); !errors.Is(err, sandbox.ErrInvalid) {
		t.Fatalf("relative NetNS: got %v, want ErrInvalid", err)
	}
}
