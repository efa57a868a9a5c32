// Package peers runs the OCI runtimes' command-line tools (crun, runc) on a
// bundle it builds itself, so the benchmark harness can time create → run a
// command → exit → destroy for them side by side with sockfaas's own
// backends, on the same machine and in the same run.
//
// A Bundle is a directory holding an empty rootfs (mount points and the
// merged-/usr symlinks only), a minimal /etc, and one config.json per run: the
// runtime CLIs read the process arguments and the cgroup path from
// config.json, so every run gets its own small bundle directory that points at
// the shared rootfs. The container sees the host's /usr read-only, runs as
// nobody with no capabilities and no_new_privs, in new pid, mount, ipc, uts
// and network (loopback only) namespaces, and in cgroups under an absolute
// parent the caller names, so nothing lands in the harness's own cgroups and
// Cleanup can find every directory.
//
// The runtimes keep their state under the bundle directory (never in
// /run/runc or /run/crun), so Cleanup removes everything a Bundle caused:
// containers, state, cgroups and files.
//
// crun 1.8.1 refuses a hybrid cgroup layout (v1 controllers plus an empty
// cgroup2 at /sys/fs/cgroup/unified). When that layout is detected, crun is
// started from a dedicated OS thread whose mount namespace has the cgroup2
// mount removed (see cgroupV1View); it adds ≈0.1–0.15 ms per runtime
// invocation, which BenchmarkHybridWorkaround measures against the
// alternatives. Other runtimes, and crun on other layouts, run directly.
//
// The package owns nothing outside the bundle directory and the cgroup
// parent; it never touches the runtimes' default state directories, the
// host's mounts or any network configuration.
package peers
