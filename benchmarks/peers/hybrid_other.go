//go:build !linux

package peers

import (
	"errors"
	"fmt"
	"os/exec"
)

func cgroupLayoutHybrid() bool { return false }

// cgroupV1View exists only on Linux; see hybrid_linux.go.
type cgroupV1View struct{}

func newCgroupV1View() (*cgroupV1View, error) {
	return nil, fmt.Errorf("cgroup v1 view: %w", errors.ErrUnsupported)
}

func (v *cgroupV1View) start(*exec.Cmd) error {
	return fmt.Errorf("cgroup v1 view: %w", errors.ErrUnsupported)
}

func (v *cgroupV1View) close() {}
