package peers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sockfaas/sockfaas/internal/mountinfo"
)

// Cleanup removes everything b caused and then b itself: it deletes (`delete
// -f`, which kills first) every container left in the bundle's runtime state
// directories, removes the cgroup parent and everything below it from every
// mounted cgroup hierarchy (v1 and v2), killing processes still inside, and
// removes the bundle directory. It refuses to remove the directory while
// anything is mounted below it.
//
// rts are the runtimes used with b; a state directory of a runtime not
// given is handled by the runtime Find returns for its name. Cleanup carries
// on past failures and returns them all.
func Cleanup(ctx context.Context, b *Bundle, rts ...*Runtime) error {
	var errs []error
	byName := map[string]*Runtime{}
	for _, r := range rts {
		byName[r.Name] = r
	}
	stateRoot := filepath.Join(b.Dir, "state")
	entries, err := os.ReadDir(stateRoot)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		r := byName[e.Name()]
		if r == nil {
			found, err := Find(e.Name())
			if err != nil {
				errs = append(errs, fmt.Errorf("cleanup %s: %w", filepath.Join(stateRoot, e.Name()), err))
				continue
			}
			defer found.Close()
			r = found
		}
		errs = append(errs, deleteContainers(ctx, r, r.StateDir(b)))
	}
	errs = append(errs, removeCgroupTree(ctx, b.CgroupParent))
	errs = append(errs, removeUnmounted(b.Dir))
	return errors.Join(errs...)
}

// deleteContainers deletes every container r has state for in state, then
// the directory. Directories the runtime cannot list (state half written when
// a runtime was killed) still name containers, so both sources count.
func deleteContainers(ctx context.Context, r *Runtime, state string) error {
	var errs []error
	ids, err := r.list(ctx, state)
	if err != nil {
		errs = append(errs, err)
	}
	entries, _ := os.ReadDir(state)
	for _, e := range entries {
		if e.IsDir() && validID(e.Name()) == nil && !slices.Contains(ids, e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	for _, id := range ids {
		if err := r.forceDelete(ctx, state, id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(state); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeCgroupTree removes parent and its descendants, deepest first, from
// every cgroup hierarchy mounted in this mount namespace.
func removeCgroupTree(ctx context.Context, parent string) error {
	if err := validCgroupParent(parent); err != nil {
		return err
	}
	mps, err := cgroupMountpoints()
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		var dirs []string
		err := filepath.WalkDir(filepath.Join(mp, parent), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroups under %s: %w", mp, err))
		}
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := rmdirCgroup(ctx, dirs[i]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// rmdirCgroup removes one (leaf) cgroup, killing its processes if it is
// still in use, and retrying while they die.
func rmdirCgroup(ctx context.Context, dir string) error {
	const attempts = 100
	for i := 0; ; i++ {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if i == attempts || ctx.Err() != nil {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		killCgroupProcs(dir)
		time.Sleep(10 * time.Millisecond)
	}
}

func killCgroupProcs(dir string) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
			_ = p.Release()
		}
	}
}

// cgroupMountpoints lists where cgroup and cgroup2 filesystems are mounted
// in this process's mount namespace.
func cgroupMountpoints() ([]string, error) {
	var out []string
	err := eachMount(func(mountpoint, fstype string) {
		if fstype == "cgroup" || fstype == "cgroup2" {
			out = append(out, mountpoint)
		}
	})
	return out, err
}

// removeUnmounted removes dir unless something is mounted at or below it:
// RemoveAll would delete through a bind mount into whatever it shows.
func removeUnmounted(dir string) error {
	var mounted []string
	err := eachMount(func(mountpoint, _ string) {
		if mountpoint == dir || strings.HasPrefix(mountpoint, dir+"/") {
			mounted = append(mounted, mountpoint)
		}
	})
	if err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	if len(mounted) > 0 {
		return fmt.Errorf("remove %s: still mounted below it: %v", dir, mounted)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// eachMount calls f for each entry of /proc/self/mountinfo.
func eachMount(f func(mountpoint, fstype string)) error {
	entries, err := mountinfo.Read()
	if err != nil {
		return err
	}
	for _, e := range entries {
		f(e.Point, e.FSType)
	}
	return nil
}
