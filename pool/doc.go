// Package pool holds the invoker's two caches and their policies: the
// generic sandbox cache (Generic) and the handler cache (Handlers).
//
// It owns bookkeeping and timing only. It never builds a sandbox, forks an
// instance or reads a cgroup itself: what it caches comes in through
// functions (GenericConfig.Make and Destroy) or the small Instance
// interface, which the invoker implements over package sandbox/lean and
// package zygote. So pool has no Linux code, needs no privileges, and its
// tests run anywhere.
//
// # Generic sandbox cache
//
// Generic keeps up to Target items that are ready to use but not yet bound
// to any function: for the invoker, a lean sandbox whose root is stitched,
// whose cgroup is taken and whose network is attached. A cold start takes
// one (Get) and binds the function's code into it. Background workers, at
// most MaxInFlight at a time, call Make until Target items are ready again.
// Get never waits for them: when the cache is empty it calls Make itself,
// on the caller's goroutine and context, and says so (fromCache is false),
// so an empty cache costs one ordinary cold build and nothing more.
//
// A failing Make is retried by the background workers after a delay that
// doubles from MinBackoff up to MaxBackoff and drops back after a success;
// every failure is logged at warn level. Close stops the workers (their
// context is cancelled) and destroys every ready item with Destroy.
//
// # Handler cache
//
// Handlers keeps instances that already serve a function, keyed by the
// caller's function key (for example "name@version"). An instance serves
// one request at a time: Acquire hands it out in a Lease and nobody else
// gets it until the Lease is released. Acquire prefers, in order,
//
//  1. an idle running instance of the key, most recently used first
//     (StartWarm);
//  2. a paused one, most recently used first, which it resumes with
//     Unpause on the caller's goroutine (StartPaused);
//  3. one the janitor is pausing at that moment: Acquire cancels the
//     pause (through the context given to Pause), waits for Pause to
//     return, then calls Unpause (StartPaused). A cancelled pause returns
//     promptly, so the wait is short; Acquire never waits for a pause to
//     run to completion.
//
// Otherwise it fails with ErrMiss and the caller builds an instance itself
// (from a generic sandbox and a zygote fork) and registers it with Add,
// which returns it already leased (StartCold).
//
// A background janitor does everything else, off the request path, every
// SweepInterval:
//
//   - Pause: an instance idle for PauseAfter is paused (cgroup freezer), at
//     most PauseConcurrency at a time. A paused instance uses no CPU and
//     its memory is the first to go under pressure.
//   - Idle timeout: an instance idle or paused for IdleTimeout is closed.
//   - Memory budget: every SampleInterval the janitor reads each live
//     instance's real memory charge (Instance.MemoryBytes, the cgroup's
//     usage). While the sum exceeds MemoryBudget it closes instances that
//     are not leased: paused ones before idle running ones, and within each
//     class the least recently used first. Leased instances are never
//     evicted; if they alone exceed the budget the cache stays over it
//     until they are released.
//
// Release(false) (the request failed in a way that leaves the instance in
// doubt: a timeout, a crash) closes the instance instead of keeping it, as
// does MaxIdlePerKey when a key holds more idle and paused instances than
// that (the least recently used, paused first, goes). Instances are closed
// on background goroutines, so Release never blocks on Close.
//
// Per-function and global concurrency limits and queueing are not here:
// the invoker does them. Handlers only reports counts per key (Counts) and
// in total (Stats).
//
// Pauses and closes are logged at debug level with the field "func" (the
// key) and "dur": for a pause, how long Pause took; for a close, how long
// the instance had been idle. Failures of Pause, Unpause and Close are
// logged at warn level and counted in HandlersStats.Errors.
package pool
