//go:build !linux

package cgpool

import (
	"context"
	"fmt"
	"os"
)

func errOS() error { return fmt.Errorf("cgroups outside Linux: %w", ErrUnsupported) }

// Detect reports ErrUnsupported off Linux.
func Detect() (Layout, error) { return Layout{}, errOS() }

// Pool is unavailable off Linux.
type Pool struct{}

// New reports ErrUnsupported off Linux.
func New(context.Context, Config) (*Pool, error) { return nil, errOS() }

// Cleanup reports ErrUnsupported off Linux.
func Cleanup(context.Context, Layout, string) error { return errOS() }

func (*Pool) Get(context.Context, Limits) (*Cgroup, error) { return nil, errOS() }
func (*Pool) Put(context.Context, *Cgroup) error           { return errOS() }
func (*Pool) PutEmpty(*Cgroup) error                       { return errOS() }
func (*Pool) Close(context.Context) error                  { return nil }
func (*Pool) Name() string                                 { return "" }
func (*Pool) Layout() Layout                               { return Layout{} }
func (*Pool) Controllers() []string                        { return nil }

// Cgroup is unavailable off Linux.
type Cgroup struct{}

func (*Cgroup) Name() string                   { return "" }
func (*Cgroup) Paths() []string                { return nil }
func (*Cgroup) ProcsFiles() []string           { return nil }
func (*Cgroup) OpenProcs() ([]*os.File, error) { return nil, errOS() }
func (*Cgroup) JoinFiles() ([]*os.File, error) { return nil, errOS() }
func (*Cgroup) Attach(int) error               { return errOS() }
func (*Cgroup) OpenDir() (*os.File, error)     { return nil, errOS() }
func (*Cgroup) JoinDir() (*os.File, error)     { return nil, errOS() }
func (*Cgroup) Pids() ([]int, error)           { return nil, errOS() }
func (*Cgroup) Freeze(context.Context) error   { return errOS() }
func (*Cgroup) Thaw() error                    { return errOS() }
func (*Cgroup) Kill(context.Context) error     { return errOS() }
func (*Cgroup) Stats() (Stats, error)          { return Stats{}, errOS() }
func (*Cgroup) OOMKills() (uint64, error)      { return 0, errOS() }
