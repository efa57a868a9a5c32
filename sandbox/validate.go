package sandbox

import (
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

var idPattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)

// ValidateID checks that id is usable as a directory and cgroup name:
// 1 to 64 characters of letters, digits, '_', '.', '-', not starting with
// a dot or dash.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("sandbox id %q: must be 1-64 of [a-zA-Z0-9_.-], starting with a letter or digit: %w", id, ErrInvalid)
	}
	return nil
}

// Validate checks the spec without touching the system.
func (s Spec) Validate() error {
	if s.Namespaces&^(NSMount|NSPID|NSIPC|NSUTS|NSNet) != 0 {
		return fmt.Errorf("unknown namespace bits %#x: %w", uint(s.Namespaces), ErrInvalid)
	}
	if s.NetNS != "" && (s.Namespaces.Has(NSNet) || !filepath.IsAbs(s.NetNS)) {
		return fmt.Errorf("network namespace %q: must be an absolute path, and not combined with NSNet: %w", s.NetNS, ErrInvalid)
	}
	if len(s.Hostname) > 64 {
		return fmt.Errorf("hostname longer than 64 bytes: %w", ErrInvalid)
	}
	if s.Limits.MemoryBytes < 0 || s.Limits.CPUMillis < 0 || s.Limits.Pids < 0 {
		return fmt.Errorf("negative limit: %w", ErrInvalid)
	}
	if s.Limits.MemoryBytes != 0 && (s.Limits.MemoryBytes < 4<<20 || s.Limits.MemoryBytes > MaxMemoryBytes) {
		return fmt.Errorf("memory limit %d outside 4 MiB..%d: %w", s.Limits.MemoryBytes, int64(MaxMemoryBytes), ErrInvalid)
	}
	if s.Limits.CPUMillis > MaxCPUMillis {
		return fmt.Errorf("CPU limit %d millis above %d: %w", s.Limits.CPUMillis, MaxCPUMillis, ErrInvalid)
	}
	if s.Limits.Pids > MaxPids {
		return fmt.Errorf("pids limit %d above the kernel's %d: %w", s.Limits.Pids, MaxPids, ErrInvalid)
	}
	if err := s.Root.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Bounds of Limits that the kernel would refuse with a bare EINVAL.
const (
	MaxMemoryBytes = 1 << 50 // 1 PiB
	MaxCPUMillis   = 1 << 20 // a thousand CPUs and then some
	MaxPids        = 1 << 22 // the kernel's PID_MAX_LIMIT
)

// Validate checks the process spec without touching the system.
func (p ProcessSpec) Validate() error {
	if len(p.Args) == 0 || p.Args[0] == "" {
		return fmt.Errorf("empty argv: %w", ErrInvalid)
	}
	if p.Dir != "" && !path.IsAbs(p.Dir) {
		return fmt.Errorf("working directory %q is not absolute: %w", p.Dir, ErrInvalid)
	}
	for _, list := range [][]string{p.Args, p.Env, {p.Dir}} {
		for _, a := range list {
			if strings.IndexByte(a, 0) >= 0 {
				return fmt.Errorf("NUL byte in %q: %w", a, ErrInvalid)
			}
		}
	}
	for _, e := range p.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("environment entry %q is not KEY=VALUE: %w", e, ErrInvalid)
		}
	}
	return nil
}
