package libct

import (
	"context"
	"testing"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/sandboxtest"
)

func TestConformance(t *testing.T) {
	testutil.RequiresRoot(t)
	sandboxtest.Run(t, func(t *testing.T) sandbox.Backend {
		b, err := New(context.Background(),
			WithStateDir(testutil.StateDir(t)),
			WithCgroupParent("/"+testutil.UniqueName(t)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
