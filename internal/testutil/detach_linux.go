package testutil

import "golang.org/x/sys/unix"

// detach lazily unmounts mount points, deepest (last listed) first.
func detach(mounts []string) {
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = unix.Unmount(mounts[i], unix.MNT_DETACH)
	}
}
