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
