package lean

import (
	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/sandbox/cgpool"
)

// Defaults for New.
const (
	DefaultStateDir   = "/run/sockfaas/lean"
	DefaultCgroupName = "/sockfaas"
	DefaultPoolSize   = 16
	DefaultParked     = 2
)

// Option configures a Backend.
type Option func(*config)

type config struct {
	stateDir string
	cgroup   string
	poolSize int
	parked   int
	layout   *cgpool.Layout
	log      zerolog.Logger
}

func defaults() config {
	return config{
		stateDir: DefaultStateDir,
		cgroup:   DefaultCgroupName,
		poolSize: DefaultPoolSize,
		parked:   DefaultParked,
		log:      zerolog.Nop(),
	}
}

// WithStateDir sets the directory the backend owns. Keep it short: Unix
// socket paths inside sandboxes are limited to 108 bytes.
func WithStateDir(dir string) Option { return func(c *config) { c.stateDir = dir } }

// WithCgroupName sets the absolute cgroup path under which the pool lives
// (in every v1 hierarchy, or on the v2 tree), e.g. "/sockfaas".
func WithCgroupName(name string) Option { return func(c *config) { c.cgroup = name } }

// WithPoolSize sets how many cgroups are created up front. The pool grows on
// demand beyond it.
func WithPoolSize(n int) Option { return func(c *config) { c.poolSize = n } }

// WithCgroupLayout overrides the detected cgroup layout, e.g. to use a
// cgroup v2 hierarchy mounted somewhere else. nil means detect.
func WithCgroupLayout(l *cgpool.Layout) Option { return func(c *config) { c.layout = l } }

// WithLogger injects the logger; the default discards.
func WithLogger(l zerolog.Logger) Option { return func(c *config) { c.log = l } }

// WithParked sets how many sandbox init helpers the backend keeps parked:
// started ahead of time in fresh namespaces and already pivoted into a
// default root, waiting for a program. A Create with the default root and
// namespaces takes one, and its first Start skips the clone, the copy of
// the root's mounts, the pivot and the unmount of the old root (0.1 to
// 0.25 ms here). 0 turns parking off. Each parked helper
// is a sleeping process holding a root.
func WithParked(n int) Option { return func(c *config) { c.parked = max(n, 0) } }
