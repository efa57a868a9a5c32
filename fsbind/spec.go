package fsbind

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
)

// ErrInvalid is returned (wrapped) for a Spec that cannot be built: relative
// or escaping paths, missing sources, duplicate destinations, destinations
// that cross a symlink. Nothing on the system is changed when it is returned.
var ErrInvalid = errors.New("invalid root spec")

// DefaultTmpSize is the size limit of a root's /tmp when Spec.TmpSize is 0.
const DefaultTmpSize = 64 << 20

// ScratchDir is where a root's private writable scratch directory appears
// inside the sandbox.
const ScratchDir = "/scratch"

// Spec describes a sandbox root as plain data.
//
// The root is a small read-only tmpfs holding mount points for:
//   - the base: when Base is "", the host's own /usr, /lib*, /bin and /sbin
//     (symlinks kept as symlinks, as on merged-/usr systems) and a minimal
//     generated /etc, all read-only; otherwise every top-level entry of the
//     rootfs directory Base, read-only;
//   - Binds, read-only unless Writable;
//   - ScratchDir, a writable directory private to this root that the host
//     can also reach (Root.Scratch);
//   - /tmp, a tmpfs limited to TmpSize bytes;
//   - /dev, a tmpfs with null, zero, full, random, urandom, tty, a /dev/shm
//     tmpfs and the fd, stdin, stdout, stderr links;
//   - /proc, an empty mount point: proc must be mounted by the process that
//     enters the root, from inside the sandbox's PID namespace.
//
// Building never writes into Base or any bind source.
type Spec struct {
	// Base is "" for the host base, or an absolute path to a rootfs
	// directory.
	Base string
	// Binds are extra mounts, in any order (parents are mounted first).
	Binds []Bind
	// TmpSize limits /tmp; 0 means DefaultTmpSize.
	TmpSize int64
	// MountPoints are empty read-only directories made in the root so that
	// something can be bound there after the root is built (Root.Bind): a
	// root cached before anyone knows which function's code it will run.
	MountPoints []string
}

// Bind mounts Source (a host file or directory) at Dest inside the root.
type Bind struct {
	Source   string // absolute host path; must exist
	Dest     string // absolute path inside the root
	Writable bool   // default read-only
}

// reserved destinations belong to the root itself and cannot be bound over.
var reserved = []string{"/", "/proc", "/dev", "/tmp", ScratchDir}

// Validate checks the spec without touching the system: absolute paths
// without NUL bytes, no '..' in destinations, no duplicate or reserved
// destinations. Build checks the rest (sources exist, no symlinks on the way
// to a destination).
func (s Spec) Validate() error {
	if strings.ContainsRune(s.Base, 0) {
		return fmt.Errorf("base %q contains a NUL byte: %w", s.Base, ErrInvalid)
	}
	if s.Base != "" && !filepath.IsAbs(s.Base) {
		return fmt.Errorf("base %q is not an absolute path: %w", s.Base, ErrInvalid)
	}
	if s.TmpSize < 0 {
		return fmt.Errorf("negative tmp size %d: %w", s.TmpSize, ErrInvalid)
	}
	seen := make(map[string]bool, len(s.Binds)+len(s.MountPoints))
	binds := append([]Bind(nil), s.Binds...)
	for _, mp := range s.MountPoints {
		binds = append(binds, Bind{Source: "/", Dest: mp})
	}
	for _, b := range binds {
		if strings.ContainsRune(b.Source, 0) || strings.ContainsRune(b.Dest, 0) {
			return fmt.Errorf("bind %q on %q contains a NUL byte: %w", b.Source, b.Dest, ErrInvalid)
		}
		if !filepath.IsAbs(b.Source) {
			return fmt.Errorf("bind source %q is not an absolute path: %w", b.Source, ErrInvalid)
		}
		if !path.IsAbs(b.Dest) {
			return fmt.Errorf("bind destination %q is not an absolute path: %w", b.Dest, ErrInvalid)
		}
		for _, part := range strings.Split(b.Dest, "/") {
			if part == ".." {
				return fmt.Errorf("bind destination %q escapes the root through '..': %w", b.Dest, ErrInvalid)
			}
		}
		d := path.Clean(b.Dest)
		for _, r := range reserved {
			if d == r || (r != "/" && strings.HasPrefix(d, r+"/")) {
				return fmt.Errorf("bind destination %q is reserved for the root's own %s: %w", b.Dest, r, ErrInvalid)
			}
		}
		if seen[d] {
			return fmt.Errorf("duplicate bind destination %q: %w", d, ErrInvalid)
		}
		seen[d] = true
	}
	return nil
}

// IsDefault says whether the spec is the default root, the host base and
// nothing else (the zero Spec, or one that spells out DefaultTmpSize): the
// roots a Builder keeps spares of.
func (s Spec) IsDefault() bool {
	return s.Base == "" && len(s.Binds) == 0 && len(s.MountPoints) == 0 &&
		(s.TmpSize == 0 || s.TmpSize == DefaultTmpSize)
}
