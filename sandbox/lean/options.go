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
)

// Option configures a Backend.
type Option func(*config)

type config struct {
	stateDir string
	cgroup   string
	poolSize int
	layout   *cgpool.Layout
	log      zerolog.Logger
}

func defaults() config {
	return config{
		stateDir: DefaultStateDir,
		cgroup:   DefaultCgroupName,
		poolSize: DefaultPoolSize,
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
