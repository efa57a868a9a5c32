//go:build !linux

package sandboxtest

import (
	"testing"

	"github.com/sockfaas/sockfaas/sandbox"
)

// Run skips: sandboxes need Linux.
func Run(t *testing.T, newBackend func(t *testing.T) sandbox.Backend) {
	t.Skip("skipping: sandboxes need Linux")
}

// Options adapt the suite to what a backend's environment can do.
type Options struct{ NoLimits bool }

// RunWith skips: sandboxes need Linux.
func RunWith(t *testing.T, newBackend func(t *testing.T) sandbox.Backend, o Options) {
	t.Skip("skipping: sandboxes need Linux")
}
