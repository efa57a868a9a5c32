// Package cgpool keeps a pool of pre-created cgroups that are emptied and
// reused, because reusing a cgroup (a few limit writes, if any) costs about a
// tenth of creating, configuring and removing one.
//
// It owns one parent cgroup (Config.Name, an absolute cgroup path) in every
// hierarchy it uses, and everything below it: the children cg-0, cg-1, ...
// and any processes attached to them. It never touches cgroups outside that
// parent, except that on cgroup v2 it enables the memory, cpu and pids
// controllers in the subtree_control of the parent's ancestors when they are
// available there but not yet enabled.
//
// Both layouts are handled with plain file I/O on cgroupfs: cgroup v1 (one
// directory per hierarchy among memory, cpu, cpuacct, pids and freezer; cpu
// and cpuacct may share one) and cgroup v2 (one directory). Paths are always
// absolute from a hierarchy's root: a relative path would resolve against the
// caller's own cgroup, which differs per controller on hybrid hosts.
//
// Invariants:
//   - Get hands out only empty cgroups whose limit files hold exactly the
//     requested limits; a cgroup Put cannot empty is dropped, never reused.
//   - Between Get and Put the caller owns the cgroup; the pool does not touch
//     it (except Close, which destroys everything).
//   - One pool per parent name at a time: New and Cleanup kill whatever lives
//     under the parent.
package cgpool
