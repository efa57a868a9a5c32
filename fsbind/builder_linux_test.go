package fsbind

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/internal/testutil"
)

// newTestBuilder makes a Builder in a fresh state directory and, when the
// test ends, closes it and checks that nothing is left.
func newTestBuilder(t testing.TB, opts ...Option) (*Builder, string) {
	t.Helper()
	testutil.RequiresRoot(t)
	dir := testutil.StateDir(t)
	b, err := NewBuilder(context.Background(), dir, opts...)
	if err != nil {
		t.Fatalf("NewBuilder: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
		if m := testutil.MountsUnder(dir); len(m) > 0 {
			t.Errorf("mounts left after Close: %v", m)
		}
		if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("work directory left after Close: %v", err)
		}
	})
	return b, dir
}

func build(t *testing.T, b *Builder, id string, spec Spec) *Root {
	t.Helper()
	r, err := b.Build(context.Background(), id, spec)
	if err != nil {
		t.Fatalf("Build(%q): %v", id, err)
	}
	return r
}

func teardown(t *testing.T, r *Root) {
	t.Helper()
	if err := r.Teardown(); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if m := testutil.MountsUnder(r.Dir); len(m) > 0 {
		t.Fatalf("mounts left after Teardown: %v", m)
	}
	if _, err := os.Lstat(r.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("root directory left after Teardown: %v", err)
	}
}

// mountOptions returns the per-mount options of the mount at mp ("ro,nosuid,...").
func mountOptions(t *testing.T, mp string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	opts := ""
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == mp {
			opts = f[5] // the last one listed is the topmost
		}
	}
	if opts == "" {
		t.Fatalf("%s is not a mount point", mp)
	}
	return opts
}

func hasOptions(t *testing.T, mp string, want ...string) {
	t.Helper()
	got := "," + mountOptions(t, mp) + ","
	for _, w := range want {
		if !strings.Contains(got, ","+w+",") {
			t.Errorf("mount %s has options %s, want %s", mp, strings.Trim(got, ","), w)
		}
	}
}

func wantErrno(t *testing.T, err error, want unix.Errno, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func TestBuildHostBase(t *testing.T) {
	b, _ := newTestBuilder(t)
	r := build(t, b, "host", Spec{})
	defer teardown(t, r)

	if r.Path != filepath.Join(r.Dir, "root") || r.Scratch != filepath.Join(r.Dir, "scratch") || r.ID != "host" {
		t.Errorf("unexpected root paths: %+v", r)
	}
	for _, name := range []string{"usr", "etc", "dev", "proc", "tmp", "scratch"} {
		fi, err := os.Lstat(filepath.Join(r.Path, name))
		if err != nil || !fi.IsDir() {
			t.Errorf("/%s: want a directory, got %v, %v", name, fi, err)
		}
	}
	for _, name := range hostBaseEntries {
		hfi, herr := os.Lstat("/" + name)
		fi, err := os.Lstat(filepath.Join(r.Path, name))
		switch {
		case herr != nil:
			if err == nil {
				t.Errorf("/%s is in the root but not on the host", name)
			}
		case hfi.Mode()&fs.ModeSymlink != 0:
			want, _ := os.Readlink("/" + name)
			got, err := os.Readlink(filepath.Join(r.Path, name))
			if err != nil || got != want {
				t.Errorf("/%s: want a symlink to %s, got %q, %v", name, want, got, err)
			}
		case hfi.IsDir():
			if err != nil || !fi.IsDir() {
				t.Errorf("/%s: want a directory, got %v", name, err)
			}
			hasOptions(t, filepath.Join(r.Path, name), "ro", "nosuid", "nodev")
		}
	}
	if _, err := os.Stat(filepath.Join(r.Path, "usr/bin/env")); err != nil {
		t.Errorf("host /usr not visible: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(r.Path, "sys")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("/sys: want nothing, got %v", err)
	}
	entries, err := os.ReadDir(filepath.Join(r.Path, "proc"))
	if err != nil || len(entries) != 0 {
		t.Errorf("/proc: want an empty directory, got %v, %v", entries, err)
	}

	// Read-only: the base, /etc, /dev and the root tmpfs itself.
	wantErrno(t, os.WriteFile(filepath.Join(r.Path, "usr/fsbind-test"), nil, 0o644), unix.EROFS, "write into /usr")
	wantErrno(t, os.WriteFile(filepath.Join(r.Path, "etc/passwd"), nil, 0o644), unix.EROFS, "write /etc/passwd")
	wantErrno(t, os.WriteFile(filepath.Join(r.Path, "dev/foo"), nil, 0o644), unix.EROFS, "write into /dev")
	wantErrno(t, os.Mkdir(filepath.Join(r.Path, "newdir"), 0o755), unix.EROFS, "mkdir in the root")
	hasOptions(t, r.Path, "ro", "nosuid", "nodev")
	hasOptions(t, filepath.Join(r.Path, "etc"), "ro", "nosuid", "nodev", "noexec")
	hasOptions(t, filepath.Join(r.Path, "dev"), "ro", "nosuid", "noexec")

	// /etc.
	passwd, err := os.ReadFile(filepath.Join(r.Path, "etc/passwd"))
	if err != nil || !strings.Contains(string(passwd), "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin") ||
		!strings.HasPrefix(string(passwd), "root:x:0:0:") {
		t.Errorf("/etc/passwd: %q, %v", passwd, err)
	}
	for _, name := range []string{"group", "hosts", "nsswitch.conf"} {
		if _, err := os.Stat(filepath.Join(r.Path, "etc", name)); err != nil {
			t.Errorf("/etc/%s: %v", name, err)
		}
	}
	for _, name := range etcCopies {
		want, herr := os.ReadFile(filepath.Join("/etc", name))
		fi, lerr := os.Lstat(filepath.Join(r.Path, "etc", name))
		got, err := os.ReadFile(filepath.Join(r.Path, "etc", name))
		switch {
		case herr != nil:
		case lerr != nil || !fi.Mode().IsRegular():
			t.Errorf("/etc/%s: want a regular file, got %v, %v", name, fi, lerr)
		case err != nil || string(got) != string(want):
			t.Errorf("/etc/%s differs from the host's (%v)", name, err)
		}
	}

	// Scratch: writable, owned by nobody, the same directory as the host's.
	scratch := filepath.Join(r.Path, "scratch")
	if err := os.WriteFile(filepath.Join(scratch, "out"), []byte("hi"), 0o644); err != nil {
		t.Fatalf("write to scratch: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(r.Scratch, "out")); err != nil || string(got) != "hi" {
		t.Errorf("scratch write not visible at Root.Scratch: %q, %v", got, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(r.Scratch, &st); err != nil || st.Uid != NobodyID || st.Gid != NobodyID || st.Mode&0o7777 != 0o755 {
		t.Errorf("scratch: uid %d gid %d mode %o (%v), want %d %d 755", st.Uid, st.Gid, st.Mode&0o7777, err, NobodyID, NobodyID)
	}
	hasOptions(t, scratch, "rw", "nosuid", "nodev")

	// /tmp and /dev/shm: tmpfs, sticky, size-limited, writable.
	for _, name := range []string{"tmp", "dev/shm"} {
		p := filepath.Join(r.Path, name)
		var sfs unix.Statfs_t
		if err := unix.Statfs(p, &sfs); err != nil {
			t.Fatal(err)
		}
		if sfs.Type != unix.TMPFS_MAGIC || int64(sfs.Blocks)*sfs.Bsize != DefaultTmpSize {
			t.Errorf("/%s: type %#x, size %d; want tmpfs of %d", name, sfs.Type, int64(sfs.Blocks)*sfs.Bsize, DefaultTmpSize)
		}
		fi, err := os.Stat(p)
		if err != nil || fi.Mode()&fs.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
			t.Errorf("/%s: mode %v, want 1777", name, fi.Mode())
		}
		if err := os.WriteFile(filepath.Join(p, "f"), []byte("x"), 0o600); err != nil {
			t.Errorf("write to /%s: %v", name, err)
		}
		hasOptions(t, p, "rw", "nosuid", "nodev")
	}
	hasOptions(t, filepath.Join(r.Path, "dev/shm"), "noexec")

	// /dev.
	for _, n := range devNodes {
		p := filepath.Join(r.Path, "dev", n.name)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Errorf("/dev/%s: %v", n.name, err)
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != n.major || unix.Minor(st.Rdev) != n.minor || st.Mode&0o777 != 0o666 {
			t.Errorf("/dev/%s: mode %o rdev %d:%d, want char device %d:%d mode 666",
				n.name, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), n.major, n.minor)
		}
	}
	// The nodes work: the /dev mount is not nodev.
	if f, err := os.OpenFile(filepath.Join(r.Path, "dev/null"), os.O_WRONLY, 0); err != nil {
		t.Errorf("open /dev/null: %v", err)
	} else {
		f.Close()
	}
	for _, l := range devLinks {
		if got, err := os.Readlink(filepath.Join(r.Path, "dev", l.name)); err != nil || got != l.target {
			t.Errorf("/dev/%s: %q, %v, want a link to %s", l.name, got, err, l.target)
		}
	}
}

func TestBuildTmpSize(t *testing.T) {
	b, _ := newTestBuilder(t)
	r := build(t, b, "small", Spec{TmpSize: 4 << 20})
	defer teardown(t, r)
	var sfs unix.Statfs_t
	if err := unix.Statfs(filepath.Join(r.Path, "tmp"), &sfs); err != nil {
		t.Fatal(err)
	}
	if got := int64(sfs.Blocks) * sfs.Bsize; got != 4<<20 {
		t.Errorf("/tmp size %d, want %d", got, 4<<20)
	}
	// The limit holds.
	err := os.WriteFile(filepath.Join(r.Path, "tmp/big"), make([]byte, 5<<20), 0o600)
	wantErrno(t, err, unix.ENOSPC, "write past the /tmp limit")
}

// makeRootfs makes a tiny rootfs directory:
//
//	bin/sh  etc/passwd  etc/sub/  lib/  lib64 -> lib  link -> etc
//	hello.txt  proc/ dev/ tmp/ sys/ (skipped by Build)
func makeRootfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"bin", "etc/sub", "lib", "proc", "dev", "tmp", "sys/kernel"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"bin/sh": "#!", "etc/passwd": "root:x:0:0::/:/bin/sh\n", "hello.txt": "hello"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"lib64": "lib", "link": "etc"} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBuildRootfsBase(t *testing.T) {
	b, _ := newTestBuilder(t)
	base := makeRootfs(t)
	extra := t.TempDir()
	if err := os.WriteFile(filepath.Join(extra, "x"), []byte("extra"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := build(t, b, "rootfs", Spec{Base: base, Binds: []Bind{{Source: extra, Dest: "/etc/sub"}}})
	defer teardown(t, r)

	for name, want := range map[string]string{"etc/passwd": "root:x:0:0::/:/bin/sh\n", "hello.txt": "hello", "bin/sh": "#!", "etc/sub/x": "extra"} {
		if got, err := os.ReadFile(filepath.Join(r.Path, name)); err != nil || string(got) != want {
			t.Errorf("/%s: %q, %v, want %q", name, got, err, want)
		}
	}
	for name, want := range map[string]string{"lib64": "lib", "link": "etc"} {
		if got, err := os.Readlink(filepath.Join(r.Path, name)); err != nil || got != want {
			t.Errorf("/%s: %q, %v, want a link to %q", name, got, err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(r.Path, "sys")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("/sys: want nothing, got %v", err)
	}
	if entries, err := os.ReadDir(filepath.Join(r.Path, "proc")); err != nil || len(entries) != 0 {
		t.Errorf("/proc: want the root's own empty directory, got %v, %v", entries, err)
	}
	if _, err := os.Stat(filepath.Join(r.Path, "usr")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("/usr: the host base leaked into a rootfs root: %v", err)
	}
	wantErrno(t, os.WriteFile(filepath.Join(r.Path, "etc/new"), nil, 0o644), unix.EROFS, "write into /etc")
	wantErrno(t, os.WriteFile(filepath.Join(r.Path, "hello.txt"), nil, 0o644), unix.EROFS, "write the bound file")
	wantErrno(t, os.WriteFile(filepath.Join(r.Path, "etc/sub/x"), nil, 0o644), unix.EROFS, "write the extra bind")
	hasOptions(t, filepath.Join(r.Path, "etc"), "ro", "nosuid", "nodev")
	hasOptions(t, filepath.Join(r.Path, "hello.txt"), "ro", "nosuid", "nodev")
	if _, err := os.Stat(filepath.Join(r.Path, "dev/null")); err != nil {
		t.Errorf("/dev/null: %v", err)
	}
	// Nothing was written into the base.
	if entries, _ := os.ReadDir(filepath.Join(base, "etc/sub")); len(entries) != 0 {
		t.Errorf("the base was written to: %v", entries)
	}
}

// sharedMount makes dir a shared mount (as / is under systemd) and undoes it
// when the test ends.
func sharedMount(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
}

func TestBuildBinds(t *testing.T) {
	b, _ := newTestBuilder(t)
	code, lib, data, file, state := t.TempDir(), t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "config.json"), filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(filepath.Join(code, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lib, "mod.py"), []byte("pass"), 0o644); err != nil {
		t.Fatal(err)
	}
	for p, content := range map[string]string{file: "{}", state: "0"} {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The code directory is a shared mount: the nested bind at /code/lib
	// must not propagate back to it.
	sharedMount(t, code)
	binds := []Bind{
		{Source: lib, Dest: "/code/lib"}, // given before its parent on purpose
		{Source: code, Dest: "/code"},
		{Source: data, Dest: "/data/out", Writable: true},
		{Source: file, Dest: "/config.json"},
		{Source: state, Dest: "/var/state", Writable: true},
	}
	usrLocal := "/usr/local"
	if fi, err := os.Lstat(usrLocal); err == nil && fi.IsDir() {
		binds = append(binds, Bind{Source: data, Dest: usrLocal})
	} else {
		usrLocal = ""
	}
	r := build(t, b, "binds", Spec{Binds: binds})
	defer teardown(t, r)

	if got, err := os.ReadFile(filepath.Join(r.Path, "code/lib/mod.py")); err != nil || string(got) != "pass" {
		t.Errorf("/code/lib/mod.py: %q, %v", got, err)
	}
	if m := testutil.MountsUnder(code); len(m) != 1 {
		t.Errorf("a mount propagated to the shared source: %v", m)
	}
	if _, err := os.Stat(filepath.Join(code, "lib/mod.py")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the nested bind is visible in its parent's source: %v", err)
	}
	wantErrno(t, os.WriteFile(filepath.Join(r.Path, "code/x"), nil, 0o644), unix.EROFS, "write into read-only /code")
	wantErrno(t, os.WriteFile(filepath.Join(r.Path, "code/lib/mod.py"), nil, 0o644), unix.EROFS, "write into read-only /code/lib")
	wantErrno(t, os.WriteFile(filepath.Join(r.Path, "config.json"), nil, 0o644), unix.EROFS, "write read-only /config.json")
	if got, err := os.ReadFile(filepath.Join(r.Path, "config.json")); err != nil || string(got) != "{}" {
		t.Errorf("/config.json: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(r.Path, "data/out/result"), []byte("42"), 0o644); err != nil {
		t.Errorf("write into writable /data/out: %v", err)
	} else if got, err := os.ReadFile(filepath.Join(data, "result")); err != nil || string(got) != "42" {
		t.Errorf("write not visible in the source: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(r.Path, "var/state"), []byte("1"), 0o644); err != nil {
		t.Errorf("write writable file /var/state: %v", err)
	} else if got, _ := os.ReadFile(state); string(got) != "1" {
		t.Errorf("file write not visible in the source: %q", got)
	}
	for _, mp := range []string{"code", "code/lib", "config.json"} {
		hasOptions(t, filepath.Join(r.Path, mp), "ro", "nosuid", "nodev")
	}
	for _, mp := range []string{"data/out", "var/state"} {
		hasOptions(t, filepath.Join(r.Path, mp), "rw", "nosuid", "nodev")
	}
	// Directories made for mount points are traversable by everyone.
	for _, d := range []string{"data", "var"} {
		if fi, err := os.Stat(filepath.Join(r.Path, d)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("/%s: %v, %v, want mode 755", d, fi.Mode(), err)
		}
	}
	if usrLocal != "" {
		if _, err := os.Stat(filepath.Join(r.Path, "usr/local/result")); err != nil {
			t.Errorf("bind over /usr/local: %v", err)
		}
		if _, err := os.Stat("/usr/local/result"); err == nil {
			t.Errorf("the bind over /usr/local reached the host's")
		}
	}
}

func TestBuildInvalid(t *testing.T) {
	b, dir := newTestBuilder(t)
	base := makeRootfs(t)
	src := t.TempDir()
	file := filepath.Join(src, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]Spec{
		"relative source":          {Binds: []Bind{{Source: "src", Dest: "/code"}}},
		"relative dest":            {Binds: []Bind{{Source: src, Dest: "code"}}},
		"missing source":           {Binds: []Bind{{Source: src + "/missing", Dest: "/code"}}},
		"dotdot dest":              {Binds: []Bind{{Source: src, Dest: "/code/../etc"}}},
		"dup dest":                 {Binds: []Bind{{Source: src, Dest: "/code"}, {Source: src, Dest: "/code/"}}},
		"reserved dest":            {Binds: []Bind{{Source: src, Dest: "/proc"}}},
		"reserved dest below":      {Binds: []Bind{{Source: src, Dest: "/dev/shm"}}},
		"missing in host base":     {Binds: []Bind{{Source: src, Dest: "/usr/fsbind-missing/x"}}},
		"missing in /etc":          {Binds: []Bind{{Source: src, Dest: "/etc/fsbind-missing"}}},
		"missing in rootfs base":   {Base: base, Binds: []Bind{{Source: src, Dest: "/etc/missing"}}},
		"missing in earlier bind":  {Binds: []Bind{{Source: src, Dest: "/code"}, {Source: src, Dest: "/code/missing"}}},
		"symlink in rootfs base":   {Base: base, Binds: []Bind{{Source: src, Dest: "/link/sub"}}},
		"symlink as dest":          {Base: base, Binds: []Bind{{Source: src, Dest: "/lib64"}}},
		"host base symlink":        {Binds: []Bind{{Source: src, Dest: "/bin/tool"}}},
		"dir source on file":       {Base: base, Binds: []Bind{{Source: src, Dest: "/hello.txt"}}},
		"file source on dir":       {Base: base, Binds: []Bind{{Source: file, Dest: "/etc/sub"}}},
		"under a file bind":        {Binds: []Bind{{Source: file, Dest: "/f"}, {Source: src, Dest: "/f/x"}}},
		"under a rootfs file":      {Base: base, Binds: []Bind{{Source: src, Dest: "/hello.txt/x"}}},
		"missing base":             {Base: base + "/missing"},
		"relative base":            {Base: "rootfs"},
		"file base":                {Base: filepath.Join(base, "hello.txt")},
		"negative tmp size":        {TmpSize: -1},
		"valid then invalid binds": {Binds: []Bind{{Source: src, Dest: "/a"}, {Source: src, Dest: "/usr/fsbind-missing"}}},
	}
	if fi, err := os.Lstat("/bin"); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		delete(cases, "host base symlink") // not a merged-/usr host
	}
	for name, spec := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := b.Build(context.Background(), "bad", spec)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Build: %v, want ErrInvalid", err)
			}
			t.Log(err)
			if m := testutil.MountsUnder(filepath.Join(dir, "bad")); len(m) > 0 {
				t.Errorf("mounts left behind: %v", m)
			}
			if _, err := os.Lstat(filepath.Join(dir, "bad")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("directory left behind: %v", err)
			}
		})
	}
	for _, id := range []string{"", ".", "..", "a/b", "a b", "../x", strings.Repeat("x", 256), "+template", "é"} {
		if _, err := b.Build(context.Background(), id, Spec{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Build(id %q): %v, want ErrInvalid", id, err)
		}
	}
	// Nothing was left in the base either.
	if entries, _ := os.ReadDir(filepath.Join(base, "etc")); len(entries) != 2 {
		t.Errorf("the base was written to: %v", entries)
	}
}

func TestBuildExistingID(t *testing.T) {
	b, _ := newTestBuilder(t)
	r := build(t, b, "dup", Spec{})
	defer teardown(t, r)
	if _, err := b.Build(context.Background(), "dup", Spec{}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Build: %v, want fs.ErrExist", err)
	}
	// The first root survived the failed second build.
	if _, err := os.Stat(filepath.Join(r.Path, "usr")); err != nil {
		t.Errorf("first root damaged: %v", err)
	}
	hasOptions(t, r.Path, "ro")
}

// A failure after mounts were made is undone.
func TestBuildRollback(t *testing.T) {
	b, dir := newTestBuilder(t)
	// /proc/self/ns/mnt passes planning (it exists), but the kernel refuses
	// to bind a mount namespace file into that same namespace (ELOOP), and
	// only at the last bind, after the root tmpfs and the base are mounted.
	_, err := b.Build(context.Background(), "rollback", Spec{Binds: []Bind{{Source: "/proc/self/ns/mnt", Dest: "/ns"}}})
	if err == nil {
		t.Skip("the kernel accepted the bind; nothing to roll back")
	}
	if errors.Is(err, ErrInvalid) {
		t.Fatalf("Build: %v, want a mount failure", err)
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "bind /proc/self/ns/mnt at /ns") {
		t.Errorf("error does not name the step: %v", err)
	}
	if m := testutil.MountsUnder(filepath.Join(dir, "rollback")); len(m) > 0 {
		t.Errorf("mounts left behind: %v", m)
	}
	if _, err := os.Lstat(filepath.Join(dir, "rollback")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("directory left behind: %v", err)
	}
}

func TestTeardownIdempotent(t *testing.T) {
	b, _ := newTestBuilder(t)
	r := build(t, b, "twice", Spec{})
	if err := os.MkdirAll(filepath.Join(r.Scratch, "a/b/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.Scratch, "a/b/c/f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	teardown(t, r)
	teardown(t, r)
	// The mounts may also be gone already (someone detached them).
	r = build(t, b, "detached", Spec{})
	if err := unix.Unmount(r.Path, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	teardown(t, r)
	if err := (&Root{}).Teardown(); err != nil {
		t.Errorf("zero Root: %v", err)
	}
}

// Teardown must never delete through a mount it did not expect.
func TestTeardownRefusesThroughMount(t *testing.T) {
	b, _ := newTestBuilder(t)
	r := build(t, b, "guarded", Spec{})
	precious := t.TempDir()
	keep := filepath.Join(precious, "keep")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(r.Scratch, "sub")
	if err := os.WriteFile(filepath.Join(r.Scratch, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(precious, mp, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := r.Teardown(); err == nil {
		t.Errorf("Teardown with a bind under scratch: want an error")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("Teardown deleted through a bind: %v", err)
	}
	if err := unix.Unmount(mp, 0); err != nil {
		t.Fatal(err)
	}
	teardown(t, r)
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("Teardown deleted through a bind: %v", err)
	}
}

// TestSpares: with WithSpares, default roots come ready-built (renamed
// into place), each exactly once, like any other root; other specs and
// taken IDs behave as without spares, and Close takes the spares down.
func TestSpares(t *testing.T) {
	b, dir := newTestBuilder(t, WithSpares(1))
	deadline := time.Now().Add(5 * time.Second)
	for len(b.spares) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if len(b.spares) == 0 {
		t.Fatal("no spare root built")
	}
	var roots []*Root
	for i := range 4 {
		r := build(t, b, fmt.Sprint("s", i), Spec{})
		roots = append(roots, r)
		if want := filepath.Join(dir, r.ID); r.Dir != want || r.Path != want+"/root" || r.Scratch != want+"/scratch" {
			t.Errorf("root %q: paths %+v, want them under %s", r.ID, r, want)
		}
		for _, sub := range []string{"usr", "dev/shm", "tmp", "scratch"} {
			if !slices.Contains(testutil.MountsUnder(r.Path), filepath.Join(r.Path, sub)) {
				t.Errorf("root %q: nothing mounted at /%s", r.ID, sub)
			}
		}
		hasOptions(t, r.Path, "ro")
	}
	if err := os.WriteFile(filepath.Join(roots[0].Scratch, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(roots[1].Scratch, "f")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("roots share a scratch directory: %v", err)
	}
	if _, err := b.Build(context.Background(), roots[0].ID, Spec{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Build of a taken ID: %v, want fs.ErrExist", err)
	}
	for _, r := range roots {
		teardown(t, r)
	}
}

func TestClose(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := testutil.StateDir(t)
	ctx := context.Background()
	b, err := NewBuilder(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	var roots []*Root
	for i := range 3 {
		roots = append(roots, build(t, b, fmt.Sprint("r", i), Spec{Binds: []Bind{{Source: t.TempDir(), Dest: "/code"}}}))
	}
	if err := os.WriteFile(filepath.Join(roots[0].Scratch, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if m := testutil.MountsUnder(dir); len(m) > 0 {
		t.Errorf("mounts left after Close: %v", m)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("work directory left after Close: %v", err)
	}
	if err := b.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.Build(ctx, "late", Spec{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Build after Close: %v, want ErrClosed", err)
	}
	for _, r := range roots {
		if err := r.Teardown(); err != nil {
			t.Errorf("Teardown after Close: %v", err)
		}
	}
}

func TestNewBuilderRefusesForeignDir(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := testutil.StateDir(t)
	if err := os.WriteFile(filepath.Join(dir, "someone-elses"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := NewBuilder(context.Background(), dir); err == nil {
		b.Close(context.Background())
		t.Fatal("NewBuilder on a non-empty directory without mounts: want an error")
	}
	if _, err := os.Stat(filepath.Join(dir, "someone-elses")); err != nil {
		t.Errorf("NewBuilder touched a foreign directory: %v", err)
	}
	for _, d := range []string{"relative", "/", ""} {
		if _, err := NewBuilder(context.Background(), d); err == nil {
			t.Errorf("NewBuilder(%q): want an error", d)
		}
	}
}

// crashEnv names the work directory for the crash helper.
const crashEnv = "FSBIND_TEST_CRASH_DIR"

// TestCrashHelper is not a test: run by TestCleanupAfterCrash in a child
// process, it builds roots and exits without tearing anything down.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("helper for TestCleanupAfterCrash")
	}
	b, err := NewBuilder(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "..", filepath.Base(dir)+"-src")
	for i := range 3 {
		r, err := b.Build(context.Background(), fmt.Sprint("crashed", i), Spec{Binds: []Bind{{Source: src, Dest: "/code", Writable: true}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(r.Scratch, "f"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// crash runs TestCrashHelper in a child process on dir, with a bind source
// next to it (removed when the test ends) holding a file that must survive.
func crash(t *testing.T, dir string) (keep string) {
	t.Helper()
	src := dir + "-src"
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(src) })
	keep = filepath.Join(src, "keep")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("crash helper: %v\n%s", err, out)
	}
	if m := testutil.MountsUnder(dir); len(m) < 10 {
		t.Fatalf("the crash left only %d mounts: %v", len(m), m)
	}
	return keep
}

func TestCleanupAfterCrash(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	dir := testutil.StateDir(t)
	keep := crash(t, dir)
	if err := Cleanup(ctx, dir); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if m := testutil.MountsUnder(dir); len(m) > 0 {
		t.Errorf("mounts left after Cleanup: %v", m)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("work directory left after Cleanup: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("Cleanup deleted a bind source's file: %v", err)
	}
	if err := Cleanup(ctx, dir); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
	if err := Cleanup(ctx, "relative"); err == nil {
		t.Errorf("Cleanup of a relative path: want an error")
	}
}

func TestNewBuilderAfterCrash(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	dir := testutil.StateDir(t)
	keep := crash(t, dir)
	b, err := NewBuilder(ctx, dir)
	if err != nil {
		t.Fatalf("NewBuilder over a crashed directory: %v", err)
	}
	if m := testutil.MountsUnder(filepath.Join(dir, "crashed0")); len(m) > 0 {
		t.Errorf("the crashed roots survived: %v", m)
	}
	r := build(t, b, "crashed0", Spec{})
	teardown(t, r)
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if m := testutil.MountsUnder(dir); len(m) > 0 {
		t.Errorf("mounts left after Close: %v", m)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("clean-up deleted a bind source's file: %v", err)
	}
}

func TestConcurrentBuilds(t *testing.T) {
	b, dir := newTestBuilder(t)
	src := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				spec := Spec{}
				if i%2 == 1 {
					spec.Binds = []Bind{{Source: src, Dest: "/code"}}
				}
				r, err := b.Build(context.Background(), fmt.Sprintf("g%d-%d", g, i), spec)
				if err != nil {
					errs <- err
					return
				}
				if err := r.Teardown(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m := testutil.MountsUnder(dir); len(m) > 0 {
		for _, mp := range m {
			if !strings.Contains(mp, templateDir) && mp != dir {
				t.Errorf("mount left: %s", mp)
			}
		}
	}
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"a", "A-b_c.1", "...", ".hidden", strings.Repeat("x", 255)} {
		if err := validID(id); err != nil {
			t.Errorf("validID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", "a/b", "a\x00", "+t", strings.Repeat("x", 256)} {
		if err := validID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("validID(%q): %v, want ErrInvalid", id, err)
		}
	}
}

func BenchmarkBuildTeardown(b *testing.B) {
	bench := func(b *testing.B, spec Spec) {
		bl, _ := newTestBuilder(b)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			r, err := bl.Build(ctx, "bench", spec)
			if err != nil {
				b.Fatal(err)
			}
			if err := r.Teardown(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("host", func(b *testing.B) { bench(b, Spec{}) })
	b.Run("host+binds", func(b *testing.B) {
		bench(b, Spec{Binds: []Bind{
			{Source: b.TempDir(), Dest: "/code"},
			{Source: b.TempDir(), Dest: "/packages"},
			{Source: b.TempDir(), Dest: "/data", Writable: true},
		}})
	})
}

func TestClone(t *testing.T) {
	b, _ := newTestBuilder(t)
	r := build(t, b, "cloned", Spec{})
	defer teardown(t, r)
	f, err := r.Clone()
	if err != nil {
		t.Fatalf("Clone: %v", err)
	}
	defer f.Close()
	// Attach the copy elsewhere (a sandbox would in its own namespace).
	target := testutil.StateDir(t)
	if err := unix.MoveMount(int(f.Fd()), "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		t.Fatalf("move_mount: %v", err)
	}
	defer func() {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount the copy: %v", err)
		}
	}()
	if got := len(testutil.MountsUnder(target)); got != len(testutil.MountsUnder(r.Path)) {
		t.Errorf("the copy has %d mounts, the root %d", got, len(testutil.MountsUnder(r.Path)))
	}
	if _, err := os.Stat(filepath.Join(target, "etc/passwd")); err != nil {
		t.Errorf("/etc/passwd in the copy: %v", err)
	}
	wantErrno(t, os.WriteFile(filepath.Join(target, "usr/x"), nil, 0o644), unix.EROFS, "write into the copy's /usr")
	wantErrno(t, os.Mkdir(filepath.Join(target, "x"), 0o755), unix.EROFS, "mkdir in the copy's root")
	if err := os.WriteFile(filepath.Join(target, "scratch/out"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.Scratch, "out")); err != nil {
		t.Errorf("a write to the copy's scratch is not in Root.Scratch: %v", err)
	}
}

// A process confined to the root, as the default sandbox user, finds a
// working userland: dynamic linking, /etc, /dev, a writable /scratch and
// /tmp, and nothing else writable.
func TestProcessInRoot(t *testing.T) {
	b, _ := newTestBuilder(t)
	r := build(t, b, "proc", Spec{})
	defer teardown(t, r)
	const script = `set -e
id -u
echo hi > /scratch/out
echo t > /tmp/t
echo s > /dev/shm/s
echo > /dev/null
test "$(head -c 4 /dev/urandom | wc -c)" = 4
grep -q '^nobody:' /etc/passwd
! touch /usr/x 2>/dev/null
! touch /x 2>/dev/null
! touch /etc/x 2>/dev/null
! touch /dev/x 2>/dev/null
echo ok`
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     r.Path,
		Credential: &syscall.Credential{Uid: NobodyID, Gid: NobodyID},
	}
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "65534\nok\n" {
		t.Fatalf("in the root: %v\n%s", err, out)
	}
	if got, err := os.ReadFile(filepath.Join(r.Scratch, "out")); err != nil || string(got) != "hi\n" {
		t.Errorf("scratch: %q, %v", got, err)
	}
}

// Under a shared parent (the systemd default for /), only the work tmpfs
// itself reaches the parent's peers, and its unmount at Close reaches them
// too: no root ever shows up there and nothing is left.
func TestSharedParent(t *testing.T) {
	testutil.RequiresRoot(t)
	parent, peer := testutil.StateDir(t), testutil.StateDir(t)
	sharedMount(t, parent)
	if err := unix.Mount(parent, peer, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(peer, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", peer, err)
		}
	})
	ctx := context.Background()
	b, err := NewBuilder(ctx, filepath.Join(parent, "work"))
	if err != nil {
		t.Fatal(err)
	}
	r := build(t, b, "shared", Spec{Binds: []Bind{{Source: t.TempDir(), Dest: "/code"}}})
	if m := testutil.MountsUnder(peer); len(m) != 2 {
		t.Errorf("mounts at the peer: %v, want the peer and the work tmpfs only", m)
	}
	teardown(t, r)
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if m := testutil.MountsUnder(peer); len(m) != 1 {
		t.Errorf("mounts left at the peer: %v", m)
	}
	if m := testutil.MountsUnder(parent); len(m) != 1 {
		t.Errorf("mounts left under the parent: %v", m)
	}
}

// TestMountPointsBindLate: a root built with MountPoints gets a function's
// code bound there later, read-only, visible through the root and in a
// Clone taken afterwards; other destinations are refused.
func TestMountPointsBindLate(t *testing.T) {
	b, _ := newTestBuilder(t)
	r := build(t, b, "late", Spec{MountPoints: []string{"/code"}})
	defer teardown(t, r)
	if entries, err := os.ReadDir(filepath.Join(r.Path, "code")); err != nil || len(entries) != 0 {
		t.Fatalf("mount point before Bind: %v %v", entries, err)
	}
	code := t.TempDir()
	if err := os.WriteFile(filepath.Join(code, "f.py"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Bind(code, "/code"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.Path, "code", "f.py")); err != nil {
		t.Fatalf("bound code not visible: %v", err)
	}
	if err := os.WriteFile(filepath.Join(r.Path, "code", "g.py"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write into bound code: %v, want EROFS", err)
	}
	for _, bad := range [][2]string{{code, "/usr"}, {code, "/other"}, {"relative", "/code"}, {"/nonexistent-sockfaas", "/code"}} {
		if err := r.Bind(bad[0], bad[1]); !errors.Is(err, ErrInvalid) {
			t.Errorf("Bind(%q, %q): %v, want ErrInvalid", bad[0], bad[1], err)
		}
	}
	if err := (Spec{MountPoints: []string{"/proc/x"}}).Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("reserved mount point: %v", err)
	}
	if err := (Spec{MountPoints: []string{"/code"}, Binds: []Bind{{Source: "/usr", Dest: "/code"}}}).Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("mount point that is also a bind: %v", err)
	}
}
