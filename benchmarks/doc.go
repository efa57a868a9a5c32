// Package benchmarks measures sockfaas against real peers side by side, in
// one process and one run, so that figures are ratios on the same machine at
// the same moment rather than numbers from different days:
//
//	go test ./benchmarks -run '^$' -bench Lifecycle
//
// Lifecycle times create -> run /bin/true -> wait -> destroy for the lean
// backend, the libcontainer backend, and the crun and runc CLIs on a bundle
// the harness builds itself (skipped with a message when not installed). Each
// variant reports p50-us and p99-us; the parallel variants report
// sandboxes/s with two workers. The benchmarks need root.
package benchmarks
