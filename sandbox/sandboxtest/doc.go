// Package sandboxtest is the conformance suite every sandbox backend passes.
// It checks the promises written on sandbox.Backend, sandbox.Sandbox and
// sandbox.Process against the real kernel: real mounts, namespaces, cgroups
// and host programs (/bin/sh, /usr/bin/python3, ...) seen through the
// default host base. It knows nothing of any backend's internals and never
// touches a backend's state directory or cgroup pool itself.
//
// A backend wires it in from a test in its own package:
//
//	func TestConformance(t *testing.T) {
//		sandboxtest.Run(t, func(t *testing.T) sandbox.Backend {
//			b, err := lean.New(context.Background(),
//				lean.WithStateDir(testutil.StateDir(t)),
//				lean.WithCgroupName("/"+testutil.UniqueName(t)))
//			if err != nil {
//				t.Fatal(err)
//			}
//			return b
//		})
//	}
package sandboxtest
