package invoker

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/netns"
)

// Defaults of New's options.
const (
	DefaultStateDir    = "/run/sockfaas"
	DefaultRegistryDir = "/var/lib/sockfaas/registry"
	DefaultCgroupName  = "/sockfaas"
	// DefaultGenericSandboxes is the target size of the generic sandbox
	// cache.
	DefaultGenericSandboxes = 4
	// DefaultMaxConcurrency caps the invocations running at once, all
	// functions together.
	DefaultMaxConcurrency = 64
	// DefaultFunctionConcurrency caps one function's invocations when its
	// manifest sets no max_concurrency.
	DefaultFunctionConcurrency = 16
	// DefaultQueue bounds the requests waiting for a slot; beyond it
	// Invoke fails with ErrOverloaded.
	DefaultQueue = 256
	// DefaultPauseAfter is how long an idle instance keeps running before
	// it is paused.
	DefaultPauseAfter = 500 * time.Millisecond
	// DefaultNetworkSlots is the number of shared network namespaces of
	// the default network.
	DefaultNetworkSlots = 4
	// DefaultAsyncWorkers serve the asynchronous queue.
	DefaultAsyncWorkers = 4
	// DefaultAsyncQueue bounds the asynchronous invocations not yet
	// started; beyond it InvokeAsync fails with ErrOverloaded.
	DefaultAsyncQueue = 1024
	// MaxPayloadBytes is the largest request payload, AWS Lambda's limit
	// for a synchronous invocation.
	MaxPayloadBytes = 6 << 20
)

// Option configures an Invoker.
type Option func(*config)

type config struct {
	stateDir    string
	registryDir string
	log         zerolog.Logger
	cgroup      string
	memBudget   uint64 // 0: half of MemTotal
	generic     int
	zygotes     [][]string
	maxConc     int
	queue       int
	network     *netns.Config
	// defaultNetwork: network is the default one, not the caller's.
	defaultNetwork bool
	pauseAfter     time.Duration
	fresh          bool
	asyncWorkers   int
	asyncQueue     int
	registryOpts   []RegistryOption
	local          localConfig // the local queue's settings (localqueue.go)
}

func defaultConfig() config {
	return config{
		stateDir:       DefaultStateDir,
		registryDir:    DefaultRegistryDir,
		log:            zerolog.Nop(),
		cgroup:         DefaultCgroupName,
		generic:        DefaultGenericSandboxes,
		maxConc:        DefaultMaxConcurrency,
		queue:          DefaultQueue,
		network:        &netns.Config{Slots: DefaultNetworkSlots, Egress: true},
		defaultNetwork: true,
		pauseAfter:     DefaultPauseAfter,
		fresh:          true,
		asyncWorkers:   DefaultAsyncWorkers,
		asyncQueue:     DefaultAsyncQueue,
		local:          defaultLocalConfig(),
	}
}

// WithStateDir sets the directory for run-time state, which does not
// survive a reboot: the lean backend's (<dir>/lean), the zygote runtime
// (<dir>/runtime), the network namespaces (<dir>/net) and the functions'
// logs (<dir>/logs). Keep it short: Unix socket paths inside it are limited
// to 108 bytes. Default DefaultStateDir.
func WithStateDir(dir string) Option { return func(c *config) { c.stateDir = dir } }

// WithRegistryDir sets the registry's directory, which persists deployed
// functions across restarts. Default DefaultRegistryDir.
func WithRegistryDir(dir string) Option { return func(c *config) { c.registryDir = dir } }

// WithRegistryOptions passes options to the registry (OpenRegistry).
func WithRegistryOptions(opts ...RegistryOption) Option {
	return func(c *config) { c.registryOpts = append(c.registryOpts, opts...) }
}

// WithLogger injects the logger; the default discards.
func WithLogger(l zerolog.Logger) Option { return func(c *config) { c.log = l } }

// WithCgroupName sets the absolute cgroup path everything lives under.
// Default DefaultCgroupName.
func WithCgroupName(name string) Option { return func(c *config) { c.cgroup = name } }

// WithMemoryBudget caps the summed memory charge of the instances (see
// pool.HandlersConfig.MemoryBudget). Default: half of the host's memory.
func WithMemoryBudget(bytes uint64) Option { return func(c *config) { c.memBudget = bytes } }

// WithGenericSandboxes sets the target size of the generic sandbox cache;
// 0 turns the background refill off. Default DefaultGenericSandboxes.
func WithGenericSandboxes(n int) Option { return func(c *config) { c.generic = n } }

// WithZygotes sets the package sets (import names) of the static zygotes
// grown under the root, which imports nothing. The tree grows further
// nodes by itself where demand is.
func WithZygotes(sets [][]string) Option {
	return func(c *config) {
		c.zygotes = make([][]string, len(sets))
		for i, s := range sets {
			c.zygotes[i] = slices.Clone(s)
		}
	}
}

// WithMaxConcurrency caps the invocations running at once, all functions
// together. Default DefaultMaxConcurrency.
func WithMaxConcurrency(n int) Option { return func(c *config) { c.maxConc = n } }

// WithQueue bounds the requests waiting for a slot (global or their
// function's); beyond it Invoke fails with ErrOverloaded at once. Default
// DefaultQueue; 0: no waiting.
func WithQueue(n int) Option { return func(c *config) { c.queue = n } }

// WithNetwork configures the network manager the manifest's network modes
// are served by; nil means none: every instance then stays in its zygote's
// private loopback-only namespace whatever its manifest says. Default: a
// netns.Manager with DefaultNetworkSlots shared slots and egress on, its
// state under the state directory.
func WithNetwork(cfg *netns.Config) Option {
	return func(c *config) {
		c.defaultNetwork = false
		if cfg == nil {
			c.network = nil
			return
		}
		cp := *cfg
		c.network = &cp
	}
}

// WithPauseAfter sets how long an idle instance keeps running before it
// is paused; negative: never. Default DefaultPauseAfter.
func WithPauseAfter(d time.Duration) Option { return func(c *config) { c.pauseAfter = d } }

// WithFreshFallback says whether a cold start that cannot fork from a
// zygote (the zygote is down and does not restart) starts a fresh
// interpreter instead. Default true.
func WithFreshFallback(on bool) Option { return func(c *config) { c.fresh = on } }

// WithAsync sets the workers of the asynchronous queue and how many
// invocations it holds before InvokeAsync fails with ErrOverloaded.
// Defaults DefaultAsyncWorkers and DefaultAsyncQueue.
func WithAsync(workers, queue int) Option {
	return func(c *config) { c.asyncWorkers, c.asyncQueue = workers, queue }
}

// ErrFunctionCrashed: the instance died while it served the call (the
// handler called os._exit, was killed by the OOM killer, crashed the
// interpreter). The instance is discarded; the next call gets a new one.
var ErrFunctionCrashed = errors.New("function instance crashed")

// TimeoutError is the error of a call that ran past its function's timeout
// (or the shorter InvokeOptions.Timeout). It matches ErrTimeout, and its
// message is AWS Lambda's ("Task timed out after 3.00 seconds"), which
// the Lambda API returns as the errorMessage.
type TimeoutError struct {
	Function string
	Timeout  time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("Task timed out after %.2f seconds", e.Timeout.Seconds())
}

// Is makes errors.Is(err, ErrTimeout) true.
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }
