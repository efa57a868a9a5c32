package cgpool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Freezing and killing, shared by a single cgroup (Cgroup.Kill) and a whole
// subtree (Cleanup, Close).

// freeze freezes the cgroup at dir and returns once the kernel reports it
// frozen: v1 freezer.state reads FROZEN, v2 cgroup.events says "frozen 1".
func freeze(ctx context.Context, v2 bool, dir string) error {
	if v2 {
		if err := writeFile(dir+"/cgroup.freeze", "1"); err != nil {
			return err
		}
		events := dir + "/cgroup.events"
		return poll(ctx, func() (bool, error) {
			n, err := readKeyed(events, "frozen")
			return n == 1, err
		})
	}
	state := dir + "/freezer.state"
	if err := writeFile(state, "FROZEN"); err != nil {
		return err
	}
	return poll(ctx, func() (bool, error) {
		var a [32]byte
		b, err := readFile(state, a[:0])
		if err != nil {
			return false, err
		}
		switch strings.TrimSpace(string(b)) {
		case "FROZEN":
			return true, nil
		case "FREEZING":
			return false, nil
		default:
			// Thawed behind our back: ask again.
			return false, writeFile(state, "FROZEN")
		}
	})
}

// thaw lets the cgroup at dir run again; it does not wait.
func thaw(v2 bool, dir string) error {
	if v2 {
		return writeFile(dir+"/cgroup.freeze", "0")
	}
	return writeFile(dir+"/freezer.state", "THAWED")
}

// killer kills every process in a cgroup or a subtree and waits until they
// are gone.
type killer struct {
	v2 bool
	// killFile is the v2 cgroup.kill of the top cgroup, "" when the kernel
	// lacks it (before 5.14) or on v1.
	killFile string
	// freezeDir is the cgroup whose freezer stops the whole target while
	// its pids are signalled, "" without a freezer.
	freezeDir string
	// events is the v2 cgroup.events of the top cgroup: "populated 0"
	// covers the whole subtree in one read.
	events string
	// procs are the cgroup.procs files to scan; walk, when set, is
	// scanned afresh each time for cgroup.procs files at any depth.
	procs []string
	walk  []string
}

const (
	// A freeze that takes longer than this is abandoned for the round
	// and the pids are signalled anyway: a task stuck in the kernel must
	// not keep the others alive.
	killFreezeTimeout = 100 * time.Millisecond
	// How long a round waits for signalled processes to vanish before
	// scanning again for ones forked meanwhile.
	killRoundWait = 50 * time.Millisecond
)

func (k *killer) procsFiles() ([]string, error) {
	if len(k.walk) == 0 {
		return k.procs, nil
	}
	var out []string
	for _, d := range k.walk {
		var err error
		if out, err = appendProcsFiles(out, d); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// appendProcsFiles appends dir's cgroup.procs and those of all cgroups
// below it; a directory removed meanwhile is skipped.
func appendProcsFiles(out []string, dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return out, nil
		}
		return out, err
	}
	out = append(out, dir+"/cgroup.procs")
	for _, e := range ents {
		if e.IsDir() {
			if out, err = appendProcsFiles(out, dir+"/"+e.Name()); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// pids returns the distinct pids in the target's cgroup.procs files.
func (k *killer) pids() ([]int, error) {
	files, err := k.procsFiles()
	if err != nil {
		return nil, err
	}
	return unionPids(files, len(k.walk) > 0)
}

// unionPids reads the cgroup.procs files and returns their pids, sorted and
// deduplicated (on v1 a process shows up once per hierarchy). With
// missingOK a file that vanished is skipped.
func unionPids(files []string, missingOK bool) ([]int, error) {
	var pids []int
	for _, f := range files {
		var err error
		if pids, err = readPids(f, pids); err != nil {
			if missingOK && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
	}
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

func (k *killer) empty() (bool, error) {
	if k.events != "" {
		n, err := readKeyed(k.events, "populated")
		return n == 0, err
	}
	if len(k.walk) == 0 {
		return isEmpty(k.procs)
	}
	pids, err := k.pids()
	return len(pids) == 0, err
}

// run kills every process of the target and returns once none is left, or
// when ctx is done. With cgroup.kill the kernel does it atomically, fork
// bombs included. Otherwise each round freezes the target (so nothing forks
// or escapes between reading the pids and signalling them), SIGKILLs every
// pid, thaws so the signals are acted on, and waits a little; rounds repeat
// until the target is empty.
func (k *killer) run(ctx context.Context) error {
	if empty, err := k.empty(); err != nil || empty {
		return err
	}
	if k.killFile != "" {
		if err := writeFile(k.killFile, "1"); err != nil {
			return err
		}
		if err := poll(ctx, k.empty); err != nil {
			return fmt.Errorf("wait for processes to die: %w", err)
		}
		return nil
	}
	for round := 1; ; round++ {
		if k.freezeDir != "" {
			fctx, cancel := context.WithTimeout(ctx, killFreezeTimeout)
			_ = freeze(fctx, k.v2, k.freezeDir)
			cancel()
		}
		pids, err := k.pids()
		for _, pid := range pids {
			// ESRCH: gone already. Anything else would be EPERM,
			// which root does not get.
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		if k.freezeDir != "" {
			if terr := thaw(k.v2, k.freezeDir); err == nil {
				err = terr
			}
		}
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, killRoundWait)
		err = poll(wctx, k.empty)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("kill %d processes (round %d): %w", len(pids), round, context.Cause(ctx))
		case wctx.Err() != nil:
			// Not gone yet, or new ones appeared: go around.
		default:
			return err
		}
	}
}

// tree is a cgroup in every hierarchy the pool uses, with what is needed to
// kill and remove it and everything below.
type tree struct {
	v2      bool
	dirs    []string // one per hierarchy, deduplicated
	freezer string   // v1: the cgroup's dir in the freezer hierarchy, if any
}

func treeOf(l Layout, name string) (tree, error) {
	if l.Version == V2 {
		d, err := l.Path("", name)
		if err != nil {
			return tree{}, err
		}
		return tree{v2: true, dirs: []string{d}}, nil
	}
	var t tree
	for c := 0; c < numCtrl; c++ {
		if _, ok := l.Mounts[ctrlName(c)]; !ok {
			continue
		}
		d, err := l.Path(ctrlName(c), name)
		if err != nil {
			return tree{}, err
		}
		if !slices.Contains(t.dirs, d) {
			t.dirs = append(t.dirs, d)
		}
		if c == ctrlFreezer {
			t.freezer = d
		}
	}
	if len(t.dirs) == 0 {
		return tree{}, fmt.Errorf("none of the cgroup v1 controllers memory, cpu, cpuacct, pids, freezer is mounted: %w", ErrUnsupported)
	}
	return t, nil
}

// destroy kills every process in the tree, then removes its cgroups
// bottom-up. found says whether any of it existed.
func (t tree) destroy(ctx context.Context) (found bool, err error) {
	var present []string
	for _, d := range t.dirs {
		if exists(d) {
			present = append(present, d)
		}
	}
	if len(present) == 0 {
		return false, nil
	}
	k := killer{v2: t.v2, walk: present}
	if t.v2 {
		top := present[0]
		if exists(top + "/cgroup.kill") {
			k.killFile = top + "/cgroup.kill"
		}
		if exists(top + "/cgroup.freeze") {
			k.freezeDir = top
		}
		k.events = top + "/cgroup.events"
	} else if t.freezer != "" && exists(t.freezer) {
		k.freezeDir = t.freezer
	}
	if k.freezeDir != "" {
		// A cgroup frozen on its own (a paused sandbox of a crashed run)
		// stays frozen when its parent thaws, and its killed tasks would
		// never die: thaw them all first, then freeze from the top.
		thawTree(t.v2, k.freezeDir)
	}
	var errs []error
	if err := k.run(ctx); err != nil {
		errs = append(errs, err)
	}
	if k.freezeDir != "" && t.v2 {
		// A frozen v2 parent would freeze whatever is put under it next.
		if err := thaw(true, k.freezeDir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, d := range present {
		if err := removeTree(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return true, errors.Join(errs...)
}

// thawTree thaws dir and every cgroup below it, ignoring errors (a cgroup
// removed meanwhile).
func thawTree(v2 bool, dir string) {
	_ = thaw(v2, dir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() {
			thawTree(v2, dir+"/"+e.Name())
		}
	}
}

// removeTree removes the cgroup directory dir and all below it, deepest
// first.
func removeTree(ctx context.Context, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range ents {
		if e.IsDir() {
			if err := removeTree(ctx, dir+"/"+e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return rmdir(ctx, dir)
}
