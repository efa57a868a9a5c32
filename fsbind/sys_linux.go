package fsbind

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/internal/mountinfo"
)

// The syscalls fsbind makes, wrapped once: EINTR is retried and errors name
// the call (os.SyscallError keeps errors.Is working on the errno).

func mount(source, target, fstype string, flags uintptr, data string) error {
	for {
		err := unix.Mount(source, target, fstype, flags, data)
		if err != unix.EINTR {
			return os.NewSyscallError("mount", err)
		}
	}
}

func unmount(target string, flags int) error {
	for {
		err := unix.Unmount(target, flags)
		if err != unix.EINTR {
			return os.NewSyscallError("umount2", err)
		}
	}
}

// bindAttrs are the mount attributes of a bind made by attach.
const (
	attrRO = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
	attrRW = unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV
)

// attach binds src (a host path, symlinks followed) onto rel under dirfd,
// non-recursively, with attrs set and private propagation.
//
// The bind is made detached (open_tree), given its attributes, then
// attached (move_mount), so it never appears writable and, unlike
// MS_BIND + MS_REMOUNT, setting attributes keeps whatever flags the source
// mount has locked (nodev, noexec, atime: a remount that drops them fails
// with EPERM in a user namespace). Making it private matters: a bind of a
// shared mount would otherwise join the source's peer group, and anything
// later mounted under it would propagate back onto the host.
//
// The target is resolved beneath dirfd with no symlink followed, so a
// source directory that changes under us cannot redirect the mount out of
// the root.
func attach(src string, dirfd int, rel string, attrs uint64) error {
	tfd, err := openBeneath(dirfd, rel)
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	fd, err := openTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{Attr_set: attrs, Propagation: unix.MS_PRIVATE}
	if err := ignoringEINTR(func() error {
		return unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr)
	}); err != nil {
		return os.NewSyscallError("mount_setattr", err)
	}
	if err := ignoringEINTR(func() error {
		return unix.MoveMount(fd, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	}); err != nil {
		return os.NewSyscallError("move_mount", err)
	}
	return nil
}

func openTree(dirfd int, path string, flags uint) (int, error) {
	for {
		fd, err := unix.OpenTree(dirfd, path, flags)
		if err != unix.EINTR {
			return fd, os.NewSyscallError("open_tree", err)
		}
	}
}

// openBeneath opens rel under dirfd as an O_PATH descriptor, refusing any
// symlink on the way and any escape from dirfd.
func openBeneath(dirfd int, rel string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(dirfd, rel, &how)
		if err != unix.EINTR {
			return fd, os.NewSyscallError("openat2", err)
		}
	}
}

func ignoringEINTR(fn func() error) error {
	for {
		err := fn()
		if err != unix.EINTR {
			return err
		}
	}
}

// isMountRoot reports whether the open directory fd is the root of a mount
// (a mount point, bind mounts of the same filesystem included). parentDev
// is the device of its parent, the fallback test on kernels before 5.8,
// which lack STATX_ATTR_MOUNT_ROOT.
func isMountRoot(fd int, parentDev uint64) (bool, uint64, error) {
	var stx unix.Statx_t
	if err := ignoringEINTR(func() error {
		return unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE, &stx)
	}); err != nil {
		return false, 0, os.NewSyscallError("statx", err)
	}
	dev := unix.Mkdev(stx.Dev_major, stx.Dev_minor)
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, dev, nil
	}
	return parentDev != 0 && dev != parentDev, dev, nil
}

// removeTree removes name under dirfd and everything below it, like
// os.RemoveAll, but refuses to descend into a mount: removing through a bind
// would delete the files it binds, which belong to someone else. A missing
// name is not an error. show is the path used in errors; parentDev is the
// device of dirfd (0 if unknown).
func removeTree(dirfd int, name, show string, parentDev uint64) error {
	err := ignoringEINTR(func() error { return unix.Unlinkat(dirfd, name, 0) })
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR {
		return fmt.Errorf("remove %s: %w", show, os.NewSyscallError("unlink", err))
	}
	// An empty directory, the usual case, goes with one more call; rmdir
	// never deletes through a mount (it fails with EBUSY on a mount point).
	err = ignoringEINTR(func() error { return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR) })
	switch err {
	case nil, unix.ENOENT:
		return nil
	case unix.ENOTEMPTY, unix.EEXIST:
	default:
		return fmt.Errorf("remove %s: %w", show, os.NewSyscallError("rmdir", err))
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", show, os.NewSyscallError("open", err))
	}
	f := os.NewFile(uintptr(fd), show)
	defer f.Close()
	mnt, dev, err := isMountRoot(fd, parentDev)
	if err != nil {
		return fmt.Errorf("remove %s: %w", show, err)
	}
	if mnt {
		return fmt.Errorf("remove %s: refusing to delete through a mount", show)
	}
	var errs []error
	for {
		names, rerr := f.Readdirnames(256)
		for _, n := range names {
			if err := removeTree(fd, n, show+"/"+n, dev); err != nil {
				errs = append(errs, err)
			}
		}
		if rerr != nil {
			if rerr != io.EOF {
				errs = append(errs, fmt.Errorf("remove %s: %w", show, rerr))
			}
			break
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	err = ignoringEINTR(func() error { return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR) })
	if err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove %s: %w", show, os.NewSyscallError("rmdir", err))
	}
	return nil
}

// umask returns the process umask without changing it (Linux 4.7+ reports
// it in /proc/self/status); if it cannot be read, it assumes the worst so
// that callers fix modes explicitly.
func umask() uint32 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o777
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if n, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return uint32(n)
			}
		}
	}
	return 0o777
}

// mountsUnder lists the mount points at or below dir in this process's
// mount namespace, in mountinfo order (parents before children).
func mountsUnder(dir string) ([]string, error) { return mountinfo.Under(dir) }
