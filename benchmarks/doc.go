// Package benchmarks measures sockfaas against real peers side by side, in
// one process and one run, so that figures are ratios on the same machine at
// the same moment rather than numbers from different days:
//
//	go test ./benchmarks -run '^$' -bench Lifecycle
//
// The benchmarks need root. Each reports p50-us and p99-us per variant.
//
//   - Lifecycle: create -> run /bin/true -> wait -> destroy for the lean
//     backend (with and without a network namespace of its own), the
//     libcontainer backend, and the crun and runc CLIs on a bundle the
//     harness builds itself (skipped with a message when not installed);
//     the parallel variants also report sandboxes/s with two workers.
//   - Network: what giving a sandbox its network adds to that lifecycle,
//     for shared, none, isolated and clone(CLONE_NEWNET), interleaved with a
//     no-network baseline (added-p50-us), with one and two workers.
//   - ColdStart: request to handler result for the hello, numpy and pandas
//     handlers, forked from a zygote into a new lean sandbox, as a fresh
//     interpreter in a new lean sandbox, and with crun and runc (suggested:
//     -benchtime=20x; crun and runc take 0.1-0.3 s per pandas start).
//   - Memory: PSS per warm numpy instance, 50 at once, zygote-forked versus
//     fresh.
//
// make bench runs them all and checks that nothing was left behind.
package benchmarks
