// Package sandbox defines what a sockfaas sandbox is and promises: the
// Sandbox and Backend interfaces, the plain-data Spec that describes one, and
// the small error vocabulary every backend returns.
//
// The package owns no mechanism. Backends live in sub-packages: lean (the
// default SOCK-style backend built from bind mounts, a few namespaces and a
// pre-created cgroup pool) and libct (full isolation on runc's libcontainer,
// kept apart so its cgo and re-exec never reach programs that do not want
// them). sandboxtest holds the conformance suite both backends pass.
package sandbox
