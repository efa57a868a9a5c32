//go:build !linux

package libct

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/sandbox"
)

// Backend is unavailable outside Linux: New fails with ErrUnsupported.
type Backend struct{}

var _ sandbox.Backend = (*Backend)(nil)

// Option configures a Backend.
type Option func(*Backend)

func WithStateDir(string) Option             { return func(*Backend) {} }
func WithLogger(zerolog.Logger) Option       { return func(*Backend) {} }
func WithCgroupParent(string) Option         { return func(*Backend) {} }
func Init()                                  {}
func (*Backend) Name() string                { return "libcontainer" }
func (*Backend) Close(context.Context) error { return nil }

func New(context.Context, ...Option) (*Backend, error) {
	return nil, fmt.Errorf("libcontainer backend: %w", sandbox.ErrUnsupported)
}

func (*Backend) Create(context.Context, string, sandbox.Spec) (sandbox.Sandbox, error) {
	return nil, fmt.Errorf("libcontainer backend: %w", sandbox.ErrUnsupported)
}

func Cleanup(context.Context, string, zerolog.Logger) error {
	return fmt.Errorf("libcontainer backend: %w", sandbox.ErrUnsupported)
}
