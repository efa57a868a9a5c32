//go:build !linux

package fsbind

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
)

// errUnsupported: roots are Linux mounts.
var errUnsupported = fmt.Errorf("fsbind on %s: %w", runtime.GOOS, errors.ErrUnsupported)

// Builder builds roots under one work directory it owns. It needs Linux.
type Builder struct {
	cfg config
}

// NewBuilder fails: fsbind needs Linux.
func NewBuilder(ctx context.Context, dir string, opts ...Option) (*Builder, error) {
	return nil, errUnsupported
}

// Build fails: fsbind needs Linux.
func (b *Builder) Build(ctx context.Context, id string, spec Spec) (*Root, error) {
	return nil, errUnsupported
}

// Close does nothing: no Builder exists off Linux.
func (b *Builder) Close(ctx context.Context) error { return nil }

// Cleanup fails: fsbind needs Linux.
func Cleanup(ctx context.Context, dir string) error { return errUnsupported }

// Teardown fails: fsbind needs Linux.
func (r *Root) Teardown() error { return errUnsupported }

// Clone fails: fsbind needs Linux.
func (r *Root) Clone() (*os.File, error) { return nil, errUnsupported }

// Bind reports that roots need Linux.
func (r *Root) Bind(source, dest string) error { return errUnsupported }
