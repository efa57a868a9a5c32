package sandbox

import (
	"fmt"
	"path/filepath"
	"regexp"
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
	if s.Limits.MemoryBytes != 0 && s.Limits.MemoryBytes < 4<<20 {
		return fmt.Errorf("memory limit %d below 4 MiB: %w", s.Limits.MemoryBytes, ErrInvalid)
	}
	if err := s.Root.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Validate checks the process spec without touching the system.
func (p ProcessSpec) Validate() error {
	if len(p.Args) == 0 || p.Args[0] == "" {
		return fmt.Errorf("empty argv: %w", ErrInvalid)
	}
	return nil
}
