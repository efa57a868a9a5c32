// Package fsbind builds and tears down sandbox roots stitched from bind
// mounts: a read-only base, read-only packages and code, a private writable
// scratch directory, a size-limited /tmp, /dev and a /proc mount point.
//
// It is pure mount plumbing in the caller's mount namespace. It knows nothing
// of processes, namespaces or cgroups, and never writes into the directories
// it binds.
//
// # Layout
//
// A Builder owns one work directory, on which it mounts a private tmpfs:
//
//	<dir>/+template/      what every root shares (read-only /etc, /dev, host base binds)
//	<dir>/<id>/root/      Root.Path: a small tmpfs, read-only once built
//	<dir>/<id>/scratch/   Root.Scratch, bound at /scratch inside the root
//
// Every bind is non-recursive and private: mounts below a bind's source do
// not appear in the root, and nothing mounted in or under a root ever
// propagates to another mount namespace (or back to the host through a
// shared source). Read-only binds are also nosuid and nodev, writable ones
// nosuid and nodev; flags the source mount already has (noexec, say) stay.
//
// # Entering a root
//
// /proc is an empty directory: the entering process mounts proc there from
// inside its own PID namespace, so that it shows that namespace. A typical
// child, already in new mount and PID namespaces:
//
//	mount("proc", <Path>/proc, "proc", MS_NOSUID|MS_NODEV|MS_NOEXEC)
//	chdir(<Path>); pivot_root(".", "."); umount2(".", MNT_DETACH); chdir("/")
//	then drop privileges (the scratch directory belongs to uid 65534) and exec
//
// Root.Path is a mount point on a private mount, as pivot_root requires.
// chroot(<Path>) also works but is escapable by a process that keeps
// CAP_SYS_CHROOT. A new mount namespace copies every mount of every root
// the Builder holds; Root.Clone hands over just one root's tree instead.
//
// It needs Linux 5.12 or later (open_tree, move_mount, mount_setattr,
// openat2, statx's STATX_ATTR_MOUNT_ROOT) and CAP_SYS_ADMIN.
package fsbind
