//go:build !linux

package sbinit

import (
	"context"
	"errors"
	"fmt"
	"syscall"
)

// Launcher is unavailable off Linux.
type Launcher struct{}

// NewLauncher returns an error wrapping errors.ErrUnsupported off Linux.
func NewLauncher() (*Launcher, error) {
	return nil, fmt.Errorf("sandbox init: linux only: %w", errors.ErrUnsupported)
}

func (l *Launcher) Close() error { return nil }

func (l *Launcher) Start(context.Context, Config) (*Process, error) {
	return nil, fmt.Errorf("sandbox init: linux only: %w", errors.ErrUnsupported)
}

// Process is unavailable off Linux.
type Process struct{}

func (p *Process) Pid() int                                 { return 0 }
func (p *Process) Signal(syscall.Signal) error              { return errors.ErrUnsupported }
func (p *Process) Wait() (ws syscall.WaitStatus, err error) { return ws, errors.ErrUnsupported }
