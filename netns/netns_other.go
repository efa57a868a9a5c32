//go:build !linux

package netns

import (
	"context"
	"fmt"
	"net/netip"
)

var errNeedsLinux = fmt.Errorf("sandbox networking needs Linux: %w", ErrUnsupported)

// Manager is only implemented on Linux.
type Manager struct{}

// New reports that sandbox networking needs Linux.
func New(ctx context.Context, cfg Config) (*Manager, error) { return nil, errNeedsLinux }

// Cleanup reports that sandbox networking needs Linux.
func Cleanup(ctx context.Context, cfg Config) error { return errNeedsLinux }

func (m *Manager) Config() Config                   { return Config{} }
func (m *Manager) Gateway() netip.Addr              { return netip.Addr{} }
func (m *Manager) Settle(ctx context.Context) error { return errNeedsLinux }
func (m *Manager) Close(ctx context.Context) error  { return nil }
func (m *Manager) Attach(ctx context.Context, mode Mode, ports []PortSpec) (*Attachment, error) {
	return nil, errNeedsLinux
}

// Attachment is only implemented on Linux.
type Attachment struct{}

func (a *Attachment) Mode() Mode                        { return "" }
func (a *Attachment) NSPath() string                    { return "" }
func (a *Attachment) Addr() netip.Addr                  { return netip.Addr{} }
func (a *Attachment) Ports() []PublishedPort            { return nil }
func (a *Attachment) Release(ctx context.Context) error { return nil }
