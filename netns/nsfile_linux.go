package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Network namespaces are pinned as nsfs bind mounts on files in one
// directory (<StateDir>/ns), not held as fds: a file outlives the process,
// so Cleanup in a later process can find and remove what a killed one made,
// and the sandbox layer needs only a path.

// netlinkTimeout bounds every request on the handles this package opens.
const netlinkTimeout = 5 * time.Second

// loIndex is the loopback's interface index, the same in every namespace.
const loIndex = 1

// createNS makes a new network namespace, pins it at path (which must not
// exist) and brings its loopback up. It returns a netlink handle whose socket
// lives in the new namespace, for configuring it from any thread; the caller
// closes it. On error nothing is left behind.
func createNS(path string) (*netlink.Handle, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("create namespace file: %w", err)
	}
	f.Close()

	// The namespace switch happens on a goroutine of its own: if the thread
	// cannot be switched back, that goroutine ends with the thread still
	// locked, and the runtime then ends the thread instead of reusing it.
	type result struct {
		h   *netlink.Handle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: os.NewSyscallError("unshare", err)}
			return
		}
		h, err := pinCurrentNS(path)
		if rerr := netns.Set(orig); rerr != nil {
			if h != nil {
				h.Close()
			}
			ch <- result{err: fmt.Errorf("return to the original network namespace: %w", rerr)}
			return // thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		ch <- result{h, err}
	}()
	r := <-ch
	if r.err != nil {
		_ = destroyNS(path)
		return nil, r.err
	}
	return r.h, nil
}

// pinCurrentNS bind-mounts the calling thread's network namespace onto path,
// opens a netlink socket in it and brings its loopback up.
func pinCurrentNS(path string) (*netlink.Handle, error) {
	if err := retryEINTR(func() error {
		return unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
	}); err != nil {
		return nil, fmt.Errorf("pin namespace at %s: %w", path, os.NewSyscallError("mount", err))
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket in new namespace: %w", err)
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("netlink socket timeout: %w", err)
	}
	if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: loIndex}}); err != nil {
		h.Close()
		return nil, fmt.Errorf("bring up loopback: %w", err)
	}
	return h, nil
}

// destroyNS unpins the namespace at path and removes the file. The kernel
// frees the namespace (and the veth peers in it) once nothing else holds it.
func destroyNS(path string) error {
	if err := unmountAll(path); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// unmountAll detaches every mount stacked on path.
func unmountAll(path string) error {
	for range 64 {
		err := retryEINTR(func() error { return unix.Unmount(path, unix.MNT_DETACH) })
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // not (or no longer) a mount point
		default:
			return fmt.Errorf("unmount %s: %w", path, os.NewSyscallError("umount2", err))
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 64 unmounts", path)
}

// ensureNSDir makes dir a shared mount of its own, as iproute2 does for
// /run/netns. Mount namespaces cloned later (sandboxes) receive copies of the
// namespace files in it; because the mount is shared, unpinning a namespace
// here unpins those copies too, instead of leaving them to keep the
// namespace alive.
func ensureNSDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	share := func() error {
		return retryEINTR(func() error { return unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "") })
	}
	err := share()
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := retryEINTR(func() error { return unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, "") }); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", dir, os.NewSyscallError("mount", err))
		}
		err = share()
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", dir, os.NewSyscallError("mount", err))
	}
	return nil
}

// removeNSDir unpins every namespace file in dir, then unmounts and removes
// dir. A missing dir is not an error.
func removeNSDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, destroyNS(filepath.Join(dir, e.Name())))
	}
	if err := unmountAll(dir); err != nil {
		errs = append(errs, err)
	} else if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// retryEINTR runs a system call again while it is interrupted by a signal.
func retryEINTR(call func() error) error {
	for {
		if err := call(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
