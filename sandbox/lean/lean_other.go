//go:build !linux

package lean

import (
	"context"
	"fmt"

	"github.com/sockfaas/sockfaas/sandbox"
)

// Backend is only implemented on Linux.
type Backend struct{}

// New reports that lean sandboxes need Linux.
func New(ctx context.Context, opts ...Option) (*Backend, error) {
	return nil, fmt.Errorf("lean sandboxes need Linux: %w", sandbox.ErrUnsupported)
}
