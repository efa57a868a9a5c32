package fsbind

import (
	"errors"
	"sync/atomic"

	"github.com/rs/zerolog"
)

// ErrClosed is returned (wrapped) by Build after Close.
var ErrClosed = errors.New("root builder closed")

// DefaultWorkSize is the size limit of a Builder's work tmpfs, which holds
// every root's mount points and scratch directory.
const DefaultWorkSize = 1 << 30

// NobodyID is the uid and gid that own a root's scratch directory unless
// WithScratchOwner says otherwise: the default sandbox user.
const NobodyID = 65534

// Option configures a Builder.
type Option func(*Builder)

// config is what Options set; it is the same on every platform.
type config struct {
	log        zerolog.Logger
	workSize   int64
	scratchUID int
	scratchGID int
	spares     int
}

func defaultConfig() config {
	return config{
		log:        zerolog.Nop(),
		workSize:   DefaultWorkSize,
		scratchUID: NobodyID,
		scratchGID: NobodyID,
	}
}

// WithLogger sets the logger; the default discards everything. Builds and
// teardowns log at debug, NewBuilder and Close at info.
func WithLogger(l zerolog.Logger) Option {
	return func(b *Builder) { b.cfg.log = l }
}

// WithWorkSize sets the size limit of the work tmpfs (default
// DefaultWorkSize). Every root's scratch directory lives there, so it bounds
// what all sandboxes together can write to /scratch.
func WithWorkSize(bytes int64) Option {
	return func(b *Builder) {
		if bytes > 0 {
			b.cfg.workSize = bytes
		}
	}
}

// WithScratchOwner sets the owner of each root's scratch directory (default
// NobodyID:NobodyID), which is the only place inside a root that the
// sandbox user can write besides /tmp and /dev/shm.
func WithScratchOwner(uid, gid int) Option {
	return func(b *Builder) {
		b.cfg.scratchUID, b.cfg.scratchGID = uid, gid
	}
}

// WithSpares keeps n roots of the default Spec (the zero Spec) built
// ahead of time, by a background goroutine, so that Build of a default Spec
// mostly renames one into place: the building happens off the caller's
// path. The default is none. Spares are built exactly as Build would build
// them and never handed out twice.
func WithSpares(n int) Option {
	return func(b *Builder) {
		if n > 0 {
			b.cfg.spares = n
		}
	}
}

// Root is one built sandbox root.
//
// Inside the sandbox, Path is "/": the process that enters it must first
// mount proc on Path/proc from inside its own PID namespace, then
// pivot_root into Path (or chroot, see the package documentation).
type Root struct {
	ID string
	// Dir is the host directory holding this root's files: Path and
	// Scratch live under it.
	Dir string
	// Path is the host path of the root mount point, the pivot_root target.
	Path string
	// Scratch is the host path of the writable scratch directory that
	// appears at ScratchDir inside the root.
	Scratch string

	b           *Builder // nil for a Root made by hand
	mountPoints []string // Spec.MountPoints, cleaned

	// spare says the root was built from the Builder's default plan, so
	// Release may hand it out again; Bind and Taint clear it.
	spare atomic.Bool
	// gone is set once Release or Teardown has given the root up: the
	// directory may already hold another root by then.
	gone atomic.Bool
}
