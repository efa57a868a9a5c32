package zygote

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/sandbox"
)

// TreeConfig configures a Tree. Zero values mean the defaults.
type TreeConfig struct {
	// Root configures the root zygote (its Packages may be empty). Its ID
	// prefixes the IDs of every other node ("<root ID>-<n>").
	Root Config
	// Static lists package sets (import names) to grow at start, each under
	// the deepest node that covers part of it, in order. Static nodes are
	// never pruned.
	Static [][]string
	// GrowAfter is how many fork requests for one requirement set that no
	// node matches exactly, within GrowWindow, make the tree grow a node for
	// it. Default DefaultGrowAfter (3).
	GrowAfter int
	// GrowWindow is the window GrowAfter counts in. Default 1 min.
	GrowWindow time.Duration
	// IdleTimeout prunes an adaptive leaf that forked nothing for this long.
	// Default 10 min.
	IdleTimeout time.Duration
	// MemoryBudget caps the summed memory charge of all zygote cgroups (lean
	// Stats, refreshed every CheckInterval and before growing). No node is
	// grown that would not fit (estimated at its parent's charge), and over
	// the budget adaptive leaves are pruned least recently used first. 0
	// means no budget.
	MemoryBudget int64
	// MaxNodes caps the tree's size, root included. Default 16.
	MaxNodes int
	// CheckInterval is how often the tree measures memory and prunes.
	// Default 10 s.
	CheckInterval time.Duration
	// ChildLimits are the cgroup limits of grown nodes; default Root.Limits.
	ChildLimits *sandbox.Limits
	// Logger for lifecycle events (growth, pruning, restarts).
	Logger *zerolog.Logger
}
