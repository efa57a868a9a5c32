//go:build !linux

package zygote

import (
	"context"
	"fmt"

	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
)

// Zygote is only implemented on Linux.
type Zygote struct{}

// Start reports that zygotes need Linux.
func Start(ctx context.Context, be *lean.Backend, cfg Config) (*Zygote, error) {
	return nil, fmt.Errorf("zygotes need Linux: %w", sandbox.ErrUnsupported)
}
