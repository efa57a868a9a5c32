package fsbind

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/internal/testutil"
)

// rootIdent is what identifies one built root whatever its name: the inodes
// of its directories on the work tmpfs (a rename keeps them, and the work
// tmpfs does not hand them out again soon) and the devices of its own
// tmpfs superblocks (unique while they are mounted).
type rootIdent struct {
	dirIno, scratchIno      uint64
	pathDev, tmpDev, shmDev uint64
}

func identify(t *testing.T, r *Root) rootIdent {
	t.Helper()
	st := func(p string) unix.Stat_t {
		t.Helper()
		var s unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			t.Fatalf("lstat %s: %v", p, err)
		}
		return s
	}
	dir, scratch := st(r.Dir), st(r.Scratch)
	path, tmp, shm := st(r.Path), st(r.Path+"/tmp"), st(r.Path+"/dev/shm")
	if path.Dev == dir.Dev || tmp.Dev == path.Dev || shm.Dev == path.Dev || tmp.Dev == shm.Dev {
		t.Fatalf("root %q: root, /tmp and /dev/shm are not separate mounts: %d %d %d (dir %d)", r.ID, path.Dev, tmp.Dev, shm.Dev, dir.Dev)
	}
	return rootIdent{dirIno: dir.Ino, scratchIno: scratch.Ino, pathDev: path.Dev, tmpDev: tmp.Dev, shmDev: shm.Dev}
}

// waitSpares waits until the Builder's spares channel holds at least n
// roots. With n = WithSpares' n the background builder is idle afterwards
// until a Build takes one.
func waitSpares(t *testing.T, b *Builder, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(b.spares) < n {
		if time.Now().After(deadline) {
			t.Fatalf("spares: %d ready after 5s, want %d", len(b.spares), n)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// entryWithIno returns the name of the work directory entry whose inode is
// ino, or "".
func entryWithIno(t *testing.T, dir string, ino uint64) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(dir, e.Name()), &st) == nil && st.Ino == ino {
			return e.Name()
		}
	}
	return ""
}

// devsMounted returns the mount points, in this thread's mount table, of
// the filesystems with any of devs.
func devsMounted(t *testing.T, devs ...uint64) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[string]bool)
	for _, d := range devs {
		want[fmt.Sprintf("%d:%d", unix.Major(d), unix.Minor(d))] = true
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && want[f[2]] {
			out = append(out, f[4])
		}
	}
	return out
}

// checkTornDown checks that the root r, identified by id, is gone for good:
// no mounts under its directory, no directory, no directory elsewhere in
// the work directory that is its (a spare), and none of its tmpfs
// superblocks mounted anywhere. The background spare builder must be idle
// (see waitSpares), or it might just have been handed a freed device
// number.
func checkTornDown(t *testing.T, r *Root, id rootIdent) {
	t.Helper()
	if m := testutil.MountsUnder(r.Dir); len(m) > 0 {
		t.Errorf("root %q: mounts left after Release: %v", r.ID, m)
	}
	if _, err := os.Lstat(r.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("root %q: directory left after Release: %v", r.ID, err)
	}
	if name := entryWithIno(t, filepath.Dir(r.Dir), id.dirIno); name != "" {
		t.Errorf("root %q: kept as %s, want it torn down", r.ID, name)
	}
	if m := devsMounted(t, id.pathDev, id.tmpDev, id.shmDev); len(m) > 0 {
		t.Errorf("root %q: its filesystems are still mounted at %v", r.ID, m)
	}
}

// checkKept checks that the released root r, identified by id, now is a
// spare: its directory renamed to a +spare- name, mounts and all, and queued.
func checkKept(t *testing.T, b *Builder, r *Root, id rootIdent) string {
	t.Helper()
	if _, err := os.Lstat(r.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("root %q: directory still there after Release: %v", r.ID, err)
	}
	if m := testutil.MountsUnder(r.Dir); len(m) > 0 {
		t.Errorf("root %q: mounts still under the old name: %v", r.ID, m)
	}
	name := entryWithIno(t, b.dir, id.dirIno)
	if !strings.HasPrefix(name, spareDir) {
		t.Fatalf("root %q: released clean, but its directory is %q, want a %s name", r.ID, name, spareDir)
	}
	mounts := testutil.MountsUnder(filepath.Join(b.dir, name))
	for _, sub := range []string{"root", "root/usr", "root/etc", "root/dev", "root/dev/shm", "root/tmp", "root/scratch"} {
		if !slices.Contains(mounts, filepath.Join(b.dir, name, sub)) {
			t.Errorf("spare %s: nothing mounted at %s (mounts %v)", name, sub, mounts)
		}
	}
	queued := false
	for _, s := range spareIDs(b) {
		queued = queued || s == name
	}
	if !queued {
		t.Errorf("spare %s is not in the spares channel %v", name, spareIDs(b))
	}
	return name
}

// spareIDs lists the IDs of the roots in the spares channel without taking
// them: only for a test that nothing else is building in.
func spareIDs(b *Builder) []string {
	var ids []string
	n := len(b.spares)
	for range n {
		select {
		case r := <-b.spares:
			ids = append(ids, r.ID)
			b.spares <- r
		default:
		}
	}
	return ids
}

// checkFresh checks that r looks just built: every mount there, read-only
// root, its writable parts empty with the modes and owners Build gives them.
func checkFresh(t *testing.T, b *Builder, r *Root) {
	t.Helper()
	if want := filepath.Join(b.dir, r.ID); r.Dir != want || r.Path != want+"/root" || r.Scratch != want+"/scratch" {
		t.Errorf("root %q: paths %+v, want them under %s", r.ID, r, want)
	}
	mounts := testutil.MountsUnder(r.Dir)
	for _, sub := range []string{"", "usr", "etc", "dev", "dev/shm", "tmp", "scratch"} {
		if !slices.Contains(mounts, filepath.Join(r.Path, sub)) {
			t.Errorf("root %q: nothing mounted at /%s", r.ID, sub)
		}
	}
	hasOptions(t, r.Path, "ro")
	for _, d := range []struct {
		p        string
		mode     uint32
		uid, gid int
	}{
		{r.Path + "/tmp", 0o1777, 0, 0},
		{r.Path + "/dev/shm", 0o1777, 0, 0},
		{r.Scratch, 0o755, b.cfg.scratchUID, b.cfg.scratchGID},
		{r.Path + "/scratch", 0o755, b.cfg.scratchUID, b.cfg.scratchGID},
	} {
		entries, err := os.ReadDir(d.p)
		if err != nil || len(entries) != 0 {
			t.Errorf("root %q: %s holds %v (%v), want nothing", r.ID, d.p, entries, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(d.p, &st); err != nil || st.Mode&0o7777 != d.mode || int(st.Uid) != d.uid || int(st.Gid) != d.gid {
			t.Errorf("root %q: %s mode %o uid %d gid %d (%v), want %o %d %d", r.ID, d.p, st.Mode&0o7777, st.Uid, st.Gid, err, d.mode, d.uid, d.gid)
		}
		if n, err := unix.Llistxattr(d.p, nil); err != nil || n != 0 {
			t.Errorf("root %q: %s has %d bytes of xattr names (%v), want none", r.ID, d.p, n, err)
		}
	}
}

func release(t *testing.T, r *Root) {
	t.Helper()
	if err := r.Release(); err != nil {
		t.Fatalf("Release(%q): %v", r.ID, err)
	}
}

// TestReleaseReuse: a clean default root goes back to the spares under a
// spare's name, mounts untouched, and a later Build hands it out under its
// new ID as if just built; a second round works too.
func TestReleaseReuse(t *testing.T) {
	b, dir := newTestBuilder(t, WithSpares(1))
	waitSpares(t, b, 1)
	for round, spec := range []Spec{{}, {TmpSize: DefaultTmpSize}} {
		a := build(t, b, fmt.Sprint("a", round), spec)
		checkFresh(t, b, a)
		id := identify(t, a)
		// Use the writable parts, leaving them as they were.
		for _, p := range []string{a.Path + "/tmp/x", a.Path + "/dev/shm/x", a.Scratch + "/x"} {
			if err := os.WriteFile(p, []byte("data"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		waitSpares(t, b, 1)
		queued := len(b.spares)
		release(t, a)
		spare := checkKept(t, b, a, id)
		if got := len(b.spares); got != queued+1 {
			t.Errorf("spares: %d after Release, want %d", got, queued+1)
		}

		// The spares are handed out in order: the released one comes
		// within the next queued+1 Builds.
		var found *Root
		var others []*Root
		for i := range queued + 1 {
			r := build(t, b, fmt.Sprintf("b%d-%d", round, i), Spec{})
			checkFresh(t, b, r)
			if identify(t, r) == id {
				found = r
				break
			}
			others = append(others, r)
		}
		if found == nil {
			t.Fatalf("released root %q (spare %s) not handed out again", a.ID, spare)
		}
		if _, err := os.Lstat(filepath.Join(dir, spare)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("spare directory %s left after its root was handed out: %v", spare, err)
		}
		// The reused root works like any.
		if err := os.WriteFile(found.Path+"/tmp/y", []byte("y"), 0o600); err != nil {
			t.Errorf("write to the reused root's /tmp: %v", err)
		}
		if err := os.WriteFile(found.Path+"/scratch/y", []byte("y"), 0o600); err != nil {
			t.Errorf("write to the reused root's /scratch: %v", err)
		}
		if got, err := os.ReadFile(found.Scratch + "/y"); err != nil || string(got) != "y" {
			t.Errorf("reused root's scratch not at Root.Scratch: %q, %v", got, err)
		}
		for _, r := range append(others, found) {
			teardown(t, r)
		}
	}
}

// TestReleaseDirty: a root that is not as built, tainted, or not of the
// default Spec is torn down by Release, never handed out again.
func TestReleaseDirty(t *testing.T) {
	b, dir := newTestBuilder(t, WithSpares(1))
	write := func(rel string) func(*testing.T, *Root) {
		return func(t *testing.T, r *Root) {
			if err := os.WriteFile(filepath.Join(r.Path, rel), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeScratch := func(name string) func(*testing.T, *Root) {
		return func(t *testing.T, r *Root) {
			if err := os.WriteFile(filepath.Join(r.Scratch, name), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	mkdir := func(p func(*Root) string) func(*testing.T, *Root) {
		return func(t *testing.T, r *Root) {
			if err := os.Mkdir(p(r), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	chmod := func(p func(*Root) string, mode uint32) func(*testing.T, *Root) {
		return func(t *testing.T, r *Root) {
			if err := unix.Chmod(p(r), mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	chown := func(p func(*Root) string, uid, gid int) func(*testing.T, *Root) {
		return func(t *testing.T, r *Root) {
			if err := os.Lchown(p(r), uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	setxattr := func(p func(*Root) string, name string) func(*testing.T, *Root) {
		return func(t *testing.T, r *Root) {
			if err := unix.Setxattr(p(r), name, []byte("1"), 0); err != nil {
				t.Fatalf("setxattr %s on %s: %v", name, p(r), err)
			}
		}
	}
	scratch := func(r *Root) string { return r.Scratch }
	tmp := func(r *Root) string { return r.Path + "/tmp" }
	shm := func(r *Root) string { return r.Path + "/dev/shm" }
	code := t.TempDir()
	if err := os.WriteFile(filepath.Join(code, "f.py"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		spec  Spec
		dirty func(*testing.T, *Root)
	}{
		{"file in tmp", Spec{}, write("tmp/x")},
		{"dir in tmp", Spec{}, mkdir(func(r *Root) string { return r.Path + "/tmp/d" })},
		{"symlink in tmp", Spec{}, func(t *testing.T, r *Root) {
			if err := os.Symlink("/etc", r.Path+"/tmp/l"); err != nil {
				t.Fatal(err)
			}
		}},
		{"file in shm", Spec{}, write("dev/shm/x")},
		{"file in scratch", Spec{}, writeScratch("x")},
		{"dot file in scratch", Spec{}, writeScratch(".x")},
		{"file in scratch through the root", Spec{}, write("scratch/x")},
		// Long names: on Linux 6.18 an entry for a name of 181 bytes or
		// more no longer fits a 256-byte getdents buffer after "." and "..".
		{"180-byte name in scratch", Spec{}, writeScratch(strings.Repeat("n", 180))},
		{"181-byte name in scratch", Spec{}, writeScratch(strings.Repeat("n", 181))},
		{"255-byte name in scratch", Spec{}, writeScratch(strings.Repeat("n", 255))},
		{"dir in scratch", Spec{}, mkdir(func(r *Root) string { return r.Scratch + "/d" })},
		{"scratch mode 0777", Spec{}, chmod(scratch, 0o777)},
		{"scratch mode 0700", Spec{}, chmod(scratch, 0o700)},
		{"scratch setgid", Spec{}, chmod(scratch, 0o2755)},
		{"scratch owned by root", Spec{}, chown(scratch, 0, 0)},
		{"scratch group changed", Spec{}, chown(scratch, NobodyID, 0)},
		{"user xattr on scratch", Spec{}, setxattr(scratch, "user.x")},
		{"trusted xattr on scratch", Spec{}, setxattr(scratch, "trusted.x")},
		{"tmp mode 0777", Spec{}, chmod(tmp, 0o777)},
		{"tmp owned by nobody", Spec{}, chown(tmp, NobodyID, NobodyID)},
		{"user xattr on tmp", Spec{}, setxattr(tmp, "user.x")},
		{"shm mode 0755", Spec{}, chmod(shm, 0o755)},
		{"trusted xattr on shm", Spec{}, setxattr(shm, "trusted.x")},
		{"tainted", Spec{}, func(t *testing.T, r *Root) { r.Taint() }},
		{"failed Bind", Spec{}, func(t *testing.T, r *Root) {
			// A default root has no mount points, but Bind taints it
			// before it checks.
			if err := r.Bind(code, "/code"); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Bind on a root without mount points: %v, want ErrInvalid", err)
			}
		}},
		{"TmpSize not the default", Spec{TmpSize: 1 << 20}, nil},
		{"MountPoints", Spec{MountPoints: []string{"/code"}}, nil},
		{"MountPoints and Bind", Spec{MountPoints: []string{"/code"}}, func(t *testing.T, r *Root) {
			if err := r.Bind(code, "/code"); err != nil {
				t.Fatal(err)
			}
		}},
		{"Binds", Spec{Binds: []Bind{{Source: code, Dest: "/code"}}}, nil},
		{"rootfs Base", Spec{Base: makeRootfs(t)}, nil},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			waitSpares(t, b, 1)
			r := build(t, b, fmt.Sprint("d", i), c.spec)
			id := identify(t, r)
			if c.dirty != nil {
				c.dirty(t, r)
			}
			waitSpares(t, b, 1) // the spare builder idle from here on
			queued := len(b.spares)
			release(t, r)
			checkTornDown(t, r, id)
			if got := len(b.spares); got != queued {
				t.Errorf("spares: %d after Release, want %d", got, queued)
			}
			if _, err := os.Stat(filepath.Join(code, "f.py")); err != nil {
				t.Fatalf("bind source damaged: %v", err)
			}
			// None of the next default roots is it, and none is dirty.
			var next []*Root
			for j := range cap(b.spares) + 1 {
				n := build(t, b, fmt.Sprintf("d%d-next%d", i, j), Spec{})
				next = append(next, n)
				checkFresh(t, b, n)
				if got := identify(t, n); got.dirIno == id.dirIno || got.scratchIno == id.scratchIno {
					t.Errorf("root %q handed out again as %q", r.ID, n.ID)
				}
			}
			for _, n := range next {
				teardown(t, n)
			}
			if err := r.Release(); err != nil {
				t.Errorf("second Release: %v", err)
			}
			if err := r.Teardown(); err != nil {
				t.Errorf("Teardown after Release: %v", err)
			}
		})
	}
	if m := testutil.MountsUnder(dir); len(m) == 0 {
		t.Error("work tmpfs gone before Close")
	}
}

// TestReleaseFull: Release keeps no more spares than the channel holds;
// the rest are torn down.
func TestReleaseFull(t *testing.T) {
	b, _ := newTestBuilder(t, WithSpares(1))
	waitSpares(t, b, 1)
	var roots []*Root
	var ids []rootIdent
	for i := range cap(b.spares) + 1 {
		r := build(t, b, fmt.Sprint("f", i), Spec{})
		roots = append(roots, r)
		ids = append(ids, identify(t, r))
		waitSpares(t, b, 1)
	}
	kept := cap(b.spares) - len(b.spares)
	for i, r := range roots {
		release(t, r)
		if i < kept {
			checkKept(t, b, r, ids[i])
		} else {
			checkTornDown(t, r, ids[i])
		}
	}
	if len(b.spares) != cap(b.spares) {
		t.Errorf("spares: %d, want the channel full (%d)", len(b.spares), cap(b.spares))
	}
}

// checkIntact checks that r, identified by id, is still built and in place.
func checkIntact(t *testing.T, r *Root, id rootIdent) {
	t.Helper()
	mounts := testutil.MountsUnder(r.Dir)
	for _, sub := range []string{"", "usr", "dev/shm", "tmp", "scratch"} {
		if !slices.Contains(mounts, filepath.Join(r.Path, sub)) {
			t.Errorf("root %q: nothing mounted at /%s", r.ID, sub)
		}
	}
	if got := identify(t, r); got != id {
		t.Errorf("root %q: now %+v, was %+v", r.ID, got, id)
	}
	if err := os.WriteFile(r.Path+"/tmp/alive", nil, 0o600); err != nil {
		t.Errorf("root %q: write to /tmp: %v", r.ID, err)
	}
}

// TestReleaseIdempotent: Release twice, Teardown after Release and either
// after another root took the same ID change nothing; in particular the
// old Root never tears down or keeps the new one.
func TestReleaseIdempotent(t *testing.T) {
	b, _ := newTestBuilder(t, WithSpares(1))
	for _, c := range []struct {
		name   string
		before func(*Root) // what happens to the first root before Release
		give   func(*Root) error
	}{
		{"kept", func(*Root) {}, (*Root).Release},
		{"torn down", (*Root).Taint, (*Root).Release},
		{"dirty", func(r *Root) { _ = os.WriteFile(r.Scratch+"/x", nil, 0o600) }, (*Root).Release},
		{"Teardown then Release", func(*Root) {}, (*Root).Teardown},
	} {
		t.Run(c.name, func(t *testing.T) {
			waitSpares(t, b, 1)
			old := build(t, b, "same", Spec{})
			c.before(old)
			if err := c.give(old); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := old.Release(); err != nil {
					t.Errorf("Release again: %v", err)
				}
				if err := old.Teardown(); err != nil {
					t.Errorf("Teardown after Release: %v", err)
				}
			}
			// Another root under the same ID, in the same directory.
			waitSpares(t, b, 1)
			nr := build(t, b, "same", Spec{})
			if nr.Dir != old.Dir {
				t.Fatalf("new root in %s, old one was in %s", nr.Dir, old.Dir)
			}
			id := identify(t, nr)
			waitSpares(t, b, 1)
			queued := len(b.spares)
			for range 2 {
				if err := old.Teardown(); err != nil {
					t.Errorf("old Teardown: %v", err)
				}
				if err := old.Release(); err != nil {
					t.Errorf("old Release: %v", err)
				}
			}
			checkIntact(t, nr, id)
			if got := len(b.spares); got != queued {
				t.Errorf("spares: %d after the old root's Release, want %d", got, queued)
			}
			if name := entryWithIno(t, b.dir, id.dirIno); name != "same" {
				t.Errorf("new root's directory is %q, want %q", name, "same")
			}
			teardown(t, nr)
		})
	}
}

// TestReleaseWithoutSpares: without WithSpares, Release is Teardown.
func TestReleaseWithoutSpares(t *testing.T) {
	b, _ := newTestBuilder(t)
	r := build(t, b, "plain", Spec{})
	id := identify(t, r)
	release(t, r)
	checkTornDown(t, r, id)
	if err := r.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}
	if err := r.Teardown(); err != nil {
		t.Errorf("Teardown after Release: %v", err)
	}
	nr := build(t, b, "plain", Spec{})
	nid := identify(t, nr)
	if err := r.Release(); err != nil {
		t.Errorf("old Release: %v", err)
	}
	checkIntact(t, nr, nid)
	teardown(t, nr)

	var nilRoot *Root
	if err := nilRoot.Release(); err != nil {
		t.Errorf("Release of a nil Root: %v", err)
	}
	if err := (&Root{}).Release(); err != nil {
		t.Errorf("Release of a zero Root: %v", err)
	}
}

// TestReleaseClose: Close takes down the released spares with everything
// else; Release and Teardown afterwards are no-ops that recreate nothing.
func TestReleaseClose(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := testutil.StateDir(t)
	ctx := context.Background()
	b, err := NewBuilder(ctx, dir, WithSpares(2))
	if err != nil {
		t.Fatal(err)
	}
	waitSpares(t, b, 2)
	var roots []*Root
	for i := range 5 {
		roots = append(roots, build(t, b, fmt.Sprint("c", i), Spec{}))
	}
	waitSpares(t, b, 2)
	// Two kept (the channel has room for spareSlack more), one torn
	// down, one dirty, one still in use at Close.
	for _, r := range roots[:3] {
		release(t, r)
	}
	if err := os.WriteFile(roots[3].Scratch+"/x", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	release(t, roots[3])
	if len(b.spares) != cap(b.spares) {
		t.Errorf("spares: %d, want %d", len(b.spares), cap(b.spares))
	}
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	check := func(when string) {
		t.Helper()
		if m := testutil.MountsUnder(dir); len(m) > 0 {
			t.Errorf("mounts left %s: %v", when, m)
		}
		if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("work directory left %s: %v", when, err)
		}
	}
	check("after Close")
	for _, r := range roots {
		if err := r.Release(); err != nil {
			t.Errorf("Release(%q) after Close: %v", r.ID, err)
		}
		if err := r.Teardown(); err != nil {
			t.Errorf("Teardown(%q) after Close: %v", r.ID, err)
		}
	}
	check("after Release and Teardown")
	if _, err := b.Build(ctx, "late", Spec{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Build after Close: %v, want ErrClosed", err)
	}
}

// TestReleaseCloseConcurrent: Close while other goroutines Build and
// Release leaves nothing behind.
func TestReleaseCloseConcurrent(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := testutil.StateDir(t)
	ctx := context.Background()
	b, err := NewBuilder(ctx, dir, WithSpares(2))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				r, err := b.Build(ctx, fmt.Sprintf("x%d-%d", g, i), Spec{})
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Build: %v", err)
					return
				}
				if err := r.Release(); err != nil {
					t.Errorf("Release: %v", err)
					return
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	if m := testutil.MountsUnder(dir); len(m) > 0 {
		t.Errorf("mounts left after Close: %v", m)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("work directory left after Close: %v", err)
	}
}

// TestReleaseConcurrent: goroutines building and releasing default roots
// side by side, some dirty, never get a used root or one whose directory
// is not its ID's, and an old Root of an ID never touches the new one.
func TestReleaseConcurrent(t *testing.T) {
	b, dir := newTestBuilder(t, WithSpares(2))
	const goroutines, iterations = 4, 50
	var wg sync.WaitGroup
	var reused sync.Map // dirIno -> true, for roots seen before
	var reuses, fresh int64
	var mu sync.Mutex
	for g := range goroutines {
		wg.Go(func() {
			old := map[string]*Root{}
			for i := range iterations {
				id := fmt.Sprintf("g%d-%d", g, i%3)
				r, err := b.Build(context.Background(), id, Spec{})
				if err != nil {
					t.Errorf("Build(%q): %v", id, err)
					return
				}
				var st unix.Stat_t
				if want := filepath.Join(dir, id); r.ID != id || r.Dir != want || r.Path != want+"/root" || r.Scratch != want+"/scratch" {
					t.Errorf("Build(%q): root %+v", id, r)
				} else if err := unix.Lstat(r.Dir, &st); err != nil {
					t.Errorf("root %q: %v", id, err)
				}
				if _, loaded := reused.LoadOrStore(st.Ino, true); loaded {
					mu.Lock()
					reuses++
					mu.Unlock()
				} else {
					mu.Lock()
					fresh++
					mu.Unlock()
				}
				for _, p := range []string{r.Path + "/tmp", r.Path + "/dev/shm", r.Scratch} {
					if entries, err := os.ReadDir(p); err != nil || len(entries) != 0 {
						t.Errorf("root %q: %s holds %d entries (%v), want none", id, p, len(entries), err)
					}
				}
				if o := old[id]; o != nil {
					if err := o.Teardown(); err != nil {
						t.Errorf("old Teardown(%q): %v", id, err)
					}
					if err := o.Release(); err != nil {
						t.Errorf("old Release(%q): %v", id, err)
					}
				}
				if err := unix.Access(r.Path+"/usr/bin", unix.X_OK); err != nil {
					t.Errorf("root %q: /usr/bin after the old root's Release: %v", id, err)
				}
				switch i % 4 {
				case 0:
					err = os.WriteFile(r.Path+"/tmp/x", []byte("x"), 0o600)
				case 1:
					err = os.WriteFile(r.Scratch+"/x", []byte("x"), 0o600)
				case 2:
					r.Taint()
				}
				if err != nil {
					t.Error(err)
				}
				if err := r.Release(); err != nil {
					t.Errorf("Release(%q): %v", id, err)
					return
				}
				old[id] = r
			}
		})
	}
	wg.Wait()
	t.Logf("%d roots reused, %d built", reuses, fresh)
	if reuses == 0 {
		t.Error("no root was reused")
	}
	// Only the template, the work tmpfs and the spares are left.
	for _, mp := range testutil.MountsUnder(dir) {
		rel, _ := filepath.Rel(dir, mp)
		if first, _, _ := strings.Cut(rel, "/"); mp != dir && first != templateDir && !strings.HasPrefix(first, spareDir) {
			t.Errorf("mount left: %s", mp)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != templateDir && !strings.HasPrefix(e.Name(), spareDir) {
			t.Errorf("directory left: %s", e.Name())
		}
	}
}
