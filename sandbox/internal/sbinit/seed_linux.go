package sbinit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// How a helper gets its mount namespace and root. A clone with CLONE_NEWNS
// copies every mount of the caller's namespace (the host's, with every
// root a builder holds: 60 and more mounts on a busy host), and the
// helper's pivot_root and unmount of the old root then drop them all
// again: per mount an allocation, an RCU-deferred free, and a share of
// the grace period's work. Instead, the helper is cloned without
// CLONE_NEWNS and given two descriptors: its root as a detached mount tree
// (open_tree(OPEN_TREE_CLONE | AT_RECURSIVE): a copy of just the root's
// own mounts) and the Launcher's seed mount namespace, whose only mount
// is an empty read-only tmpfs. It joins the seed, unshares a copy of that
// one mount, attaches the tree there and pivots into it; the old root it
// unmounts is that one tmpfs. See csrc/sbinit.c, "tree=N seed=N".

// rootFiles returns the descriptors a helper entering root needs: the
// root's detached tree, which the caller closes once the helper has
// started, and the seed namespace, which stays the Launcher's.
func (l *Launcher) rootFiles(ctx context.Context, root string) (tree, seed *os.File, err error) {
	if seed, err = l.seedNS(ctx); err != nil {
		return nil, nil, err
	}
	// pivot_root would refuse a root that is not a mount point; the
	// tree of one would be a bind of it, which the contract does not
	// promise either.
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, root, unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, &stx); err != nil {
		return nil, nil, &StepError{Step: "open root", Err: err}
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return nil, nil, &StepError{Step: "root is not a mount point", Err: unix.EINVAL}
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, root, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return nil, nil, &StepError{Step: "open root", Err: err}
	}
	return os.NewFile(uintptr(fd), root), seed, nil
}

// rootArgs are the helper's arguments for tree and seed, which go to it
// at descriptors 3+len(files) and the one after.
func rootArgs(files []*os.File) []string {
	n := 3 + len(files)
	return []string{"tree=" + strconv.Itoa(n), "seed=" + strconv.Itoa(n+1)}
}

// seedNS returns the seed mount namespace, made on first use by a helper
// run in seed mode (see csrc/sbinit.c): it pivots into the seed tmpfs,
// reports, and waits until its namespace has been opened here. The
// namespace is kept only if that helper then exits 0: one killed half-way
// (its report pipe closes as it dies) may leave a half-made namespace.
func (l *Launcher) seedNS(ctx context.Context) (*os.File, error) {
	l.seedMu.Lock()
	defer l.seedMu.Unlock()
	if l.seed != nil {
		return l.seed, nil
	}
	goR, goW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox init: seed mount namespace: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		goR.Close()
		goW.Close()
		return nil, fmt.Errorf("sandbox init: seed mount namespace: %w", err)
	}
	defer errR.Close()
	var cmd *exec.Cmd
	l.mu.RLock()
	if l.exe == nil {
		err = fmt.Errorf("sandbox init: launcher closed: %w", os.ErrClosed)
	} else {
		cmd = l.helperCmd([]string{"sockfaas-init", "flags=" + strconv.Itoa(unix.CLONE_NEWNS), "seed"}, []*os.File{goR, errW})
		cmd.Env = []string{}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = l.null, l.null, l.null
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS, Setsid: true}
		if err = cmd.Start(); err != nil {
			err = fmt.Errorf("sandbox init: start seed helper: %w", err)
		}
	}
	l.mu.RUnlock()
	goR.Close()
	errW.Close()
	if err != nil {
		goW.Close()
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	err = awaitReport(ctx, stop, errR, &Config{Args: []string{"seed"}})
	var ns *os.File
	if err == nil { // else a *StepError naming the failed step
		if ns, err = openMountNS(cmd.Process.Pid); err != nil {
			err = fmt.Errorf("sandbox init: seed mount namespace: %w", err)
		}
	}
	if err != nil {
		_ = cmd.Process.Kill()
	}
	goW.Close() // EOF: the seed helper exits
	werr := cmd.Wait()
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		return nil, err
	case werr != nil:
		ns.Close()
		return nil, fmt.Errorf("sandbox init: seed helper: %w", werr)
	}
	l.seed = ns
	return ns, nil
}
