package invoker_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/invoker"
	"github.com/sockfaas/sockfaas/netns"
	"github.com/sockfaas/sockfaas/zygote"
)

// fakeResolver knows numpy and Pillow, like this machine's python3.
func fakeResolver(_ context.Context, reqs []zygote.Requirement) (map[string]zygote.Resolution, error) {
	installed := map[string]zygote.Resolution{
		"numpy":  {Version: "1.24.2", Imports: []string{"numpy"}},
		"pillow": {Version: "9.4.0", Imports: []string{"PIL"}},
	}
	out := map[string]zygote.Resolution{}
	missing := &zygote.MissingRequirementsError{}
	for _, r := range reqs {
		if res, ok := installed[strings.ToLower(r.Name)]; ok {
			out[r.Name] = res
		} else {
			missing.Missing = append(missing.Missing, zygote.MissingRequirement{Requirement: r, Reason: "not installed"})
		}
	}
	if len(missing.Missing) > 0 {
		return out, missing
	}
	return out, nil
}

// openRegistry opens a registry in dir (a new temporary one for "") with
// the fake resolver, closed when the test ends.
func openRegistry(t *testing.T, dir string, opts ...invoker.RegistryOption) *invoker.Registry {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	// The code is read-only: without root, t.TempDir could not remove it.
	t.Cleanup(func() { makeWritable(t, dir) })
	r, err := invoker.OpenRegistry(context.Background(), dir, append([]invoker.RegistryOption{invoker.WithResolver(fakeResolver)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func makeWritable(t *testing.T, dir string) {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			err = os.Chmod(p, 0o700)
		}
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Error(err)
	}
}

const lambdaSrc = "def lambda_handler(event, context):\n    return event\n"

// writeTree writes files (name → content) under a new temporary directory;
// names ending in "*" are made executable (without the "*").
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		mode := fs.FileMode(0o644)
		if n, ok := strings.CutSuffix(name, "*"); ok {
			name, mode = n, 0o755
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	return dir
}

// snapshot describes every entry under dir: type, mode, owner, size and
// content or link target.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("%v uid=%d size=%d", fi.Mode(), st.Uid, fi.Size())
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" sha=%x", sha256.Sum256(data))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// unchanged runs op, which must fail, and checks that the registry's
// directory and List are as they were.
func unchanged(t *testing.T, r *invoker.Registry, op func() error) error {
	t.Helper()
	before, list := snapshot(t, r.Dir()), r.List()
	err := op()
	if err == nil {
		t.Fatal("the operation succeeded; want an error")
	}
	if after := snapshot(t, r.Dir()); !reflect.DeepEqual(before, after) {
		for p, d := range after {
			if before[p] != d {
				t.Errorf("after the failure: %s: %s (was %q)", p, d, before[p])
			}
		}
		for p := range before {
			if _, ok := after[p]; !ok {
				t.Errorf("after the failure: %s is gone", p)
			}
		}
	}
	if got := r.List(); !reflect.DeepEqual(got, list) {
		t.Errorf("List changed: %v, was %v", names(got), names(list))
	}
	return err
}

func names(fns []*invoker.Function) []string {
	var out []string
	for _, f := range fns {
		out = append(out, fmt.Sprintf("%s@%d", f.Name, f.Version))
	}
	return out
}

// tarEntry is one entry of an archive built by tarGz.
type tarEntry struct {
	Name string
	Body string
	Type byte  // tar.TypeReg when zero
	Mode int64 // 0o644 when zero
	Link string
	// Zeros, when set, is the content instead of Body: that many zero bytes.
	Zeros int64
}

func tarGz(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Linkname: e.Link, ModTime: time.Unix(1e9, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body)) + e.Zeros
		}
		if h.Typeflag == tar.TypeChar {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.Body); err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(tw, zeros{}, e.Zeros); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func fromBytes(b []byte) invoker.Source { return invoker.FromArchive(bytes.NewReader(b), 10<<20) }

func TestDeployFromDir(t *testing.T) {
	r := openRegistry(t, "")
	src := writeTree(t, map[string]string{
		"lambda_function.py": lambdaSrc,
		"lib/util.py":        "X = 1\n",
		"bin/tool*":          "#!/bin/sh\n",
		"sockfaas.yaml":      "memory_mb: 512\nenvironment: {GREETING: hi}\nports: [8080]\n",
		"requirements.txt":   "numpy>=1.20\nPillow\n",
	})
	if err := os.Mkdir(filepath.Join(src, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("lib/util.py", filepath.Join(src, "util.py")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(src, "lib"), filepath.Join(src, "lib2")); err != nil { // absolute, inside
		t.Fatal(err)
	}
	before := time.Now()
	fn, err := r.Deploy(context.Background(), "hello", invoker.FromDir(src))
	if err != nil {
		t.Fatal(err)
	}
	if fn.Name != "hello" || fn.Version != 1 || fn.Created.Before(before.Add(-time.Second)) || !strings.HasPrefix(fn.Digest, "sha256:") {
		t.Errorf("got %+v", fn)
	}
	want := invoker.Manifest{
		Handler: invoker.DefaultHandler, Runtime: "python3", Style: invoker.StyleLambda,
		Requirements: []string{"numpy>=1.20", "Pillow"}, MemoryMB: 512, TimeoutSec: 3,
		Environment: map[string]string{"GREETING": "hi"}, Network: netns.ModeShared, Ports: []int{8080},
	}
	if !reflect.DeepEqual(fn.Manifest, want) {
		t.Errorf("manifest %+v\nwant %+v", fn.Manifest, want)
	}
	if want := []string{"PIL", "numpy"}; !slices.Equal(fn.Imports, want) {
		t.Errorf("imports %q, want %q", fn.Imports, want)
	}
	if want := filepath.Join(r.Dir(), "functions", "hello", "1", "code"); fn.Dir != want {
		t.Errorf("Dir %s, want %s", fn.Dir, want)
	}

	// The copy: read-only, owned by root when we are root, links relative.
	wantModes := map[string]fs.FileMode{
		".": fs.ModeDir | 0o555, "lambda_function.py": 0o444, "lib": fs.ModeDir | 0o555,
		"lib/util.py": 0o444, "bin": fs.ModeDir | 0o555, "bin/tool": 0o555, "empty": fs.ModeDir | 0o555,
		"sockfaas.yaml": 0o444, "requirements.txt": 0o444,
	}
	for name, mode := range wantModes {
		fi, err := os.Lstat(filepath.Join(fn.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), mode)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; os.Geteuid() == 0 && uid != 0 {
			t.Errorf("%s: owner %d, want root", name, uid)
		}
	}
	for link, target := range map[string]string{"util.py": "lib/util.py", "lib2": "lib"} {
		if got, err := os.Readlink(filepath.Join(fn.Dir, link)); err != nil || got != target {
			t.Errorf("link %s -> %q (%v), want %q", link, got, err, target)
		}
	}

	// Later edits to the source do not reach the deployed version.
	if err := os.WriteFile(filepath.Join(src, "lambda_function.py"), []byte("broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(fn.Dir, "lambda_function.py")); string(data) != lambdaSrc {
		t.Errorf("deployed code changed: %q", data)
	}

	got, err := r.Get("hello")
	if err != nil || !reflect.DeepEqual(got, fn) {
		t.Errorf("Get = %+v, %v; want %+v", got, err, fn)
	}
	// Copies: changing what we got changes nothing in the registry.
	got.Manifest.Environment["GREETING"] = "changed"
	got.Imports[0] = "changed"
	if again, _ := r.Get("hello"); !reflect.DeepEqual(again, fn) {
		t.Errorf("a returned Function aliases the registry's: %+v", again)
	}
	if _, err := r.Get("nope"); !errors.Is(err, invoker.ErrNotFound) {
		t.Errorf("Get(nope) = %v, want ErrNotFound", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(r.Dir(), "tmp")); len(entries) != 0 {
		t.Errorf("tmp holds %v after a deploy", entries)
	}
}

func TestDeployOpenLambdaAndPackages(t *testing.T) {
	r := openRegistry(t, "")
	fn, err := r.Deploy(context.Background(), "ol", invoker.FromDir("testdata/openlambda"))
	if err != nil {
		t.Fatal(err)
	}
	if fn.Manifest.Handler != "f.f" || fn.Manifest.Style != invoker.StyleOpenLambda {
		t.Errorf("openlambda: %+v", fn.Manifest)
	}
	fn, err = r.Deploy(context.Background(), "pil", invoker.FromDir("testdata/pillow"))
	if err != nil {
		t.Fatal(err)
	}
	m := fn.Manifest
	if m.Handler != "app.main.handle" || m.MemoryMB != 256 || m.Network != netns.ModeNone ||
		m.Environment["DEBUG"] != "1" || !slices.Equal(m.Requirements, []string{"Pillow", "numpy>=1.20"}) {
		t.Errorf("pillow: %+v", m)
	}
	if !slices.Equal(fn.Imports, []string{"PIL", "numpy"}) {
		t.Errorf("imports %q", fn.Imports)
	}
	if got := names(r.List()); !slices.Equal(got, []string{"ol@1", "pil@1"}) {
		t.Errorf("List = %v", got)
	}
}

func TestRedeployKeepsVersions(t *testing.T) {
	r := openRegistry(t, "", invoker.WithKeepVersions(2))
	ctx := context.Background()
	var digests []string
	for i := 1; i <= 5; i++ {
		src := writeTree(t, map[string]string{"lambda_function.py": lambdaSrc + fmt.Sprintf("# %d\n", i)})
		fn, err := r.Deploy(ctx, "fn", invoker.FromDir(src))
		if err != nil {
			t.Fatal(err)
		}
		if fn.Version != i {
			t.Fatalf("deploy %d made version %d", i, fn.Version)
		}
		digests = append(digests, fn.Digest)
	}
	vs, err := r.Versions("fn")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(vs); !slices.Equal(got, []string{"fn@3", "fn@4", "fn@5"}) {
		t.Errorf("versions %v, want 3..5", got)
	}
	for v := 1; v <= 5; v++ {
		fn, err := r.GetVersion("fn", v)
		_, statErr := os.Stat(filepath.Join(r.Dir(), "functions", "fn", fmt.Sprint(v)))
		if v <= 2 {
			if !errors.Is(err, invoker.ErrNotFound) || !errors.Is(statErr, fs.ErrNotExist) {
				t.Errorf("version %d: %v, %v; want it gone", v, err, statErr)
			}
			continue
		}
		if err != nil || statErr != nil || fn.Digest != digests[v-1] {
			t.Errorf("version %d: %v, %v", v, err, statErr)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(digests)))) != 5 {
		t.Errorf("different code gave equal digests: %q", digests)
	}
	if entries, _ := os.ReadDir(filepath.Join(r.Dir(), "tmp")); len(entries) != 0 {
		t.Errorf("tmp holds %v after pruning", entries)
	}

	// Keep nothing but the newest.
	r0 := openRegistry(t, "", invoker.WithKeepVersions(0))
	for range 3 {
		if _, err := r0.Deploy(ctx, "fn", invoker.FromDir("testdata/hello")); err != nil {
			t.Fatal(err)
		}
	}
	if vs, _ := r0.Versions("fn"); !slices.Equal(names(vs), []string{"fn@3"}) {
		t.Errorf("keep 0: %v", names(vs))
	}
}

func TestDigestIgnoresSourceKind(t *testing.T) {
	r := openRegistry(t, "")
	files := map[string]string{"lambda_function.py": lambdaSrc, "lib/a.py": "A = 1\n", "run.sh*": "#!/bin/sh\n"}
	fromDir, err := r.Deploy(context.Background(), "d", invoker.FromDir(writeTree(t, files)))
	if err != nil {
		t.Fatal(err)
	}
	archive := tarGz(t,
		tarEntry{Name: "./", Type: tar.TypeDir, Mode: 0o755},
		tarEntry{Name: "./run.sh", Body: "#!/bin/sh\n", Mode: 0o700},
		tarEntry{Name: "./lib/a.py", Body: "A = 1\n"},
		tarEntry{Name: "./lambda_function.py", Body: lambdaSrc, Mode: 0o600},
	)
	fromTar, err := r.Deploy(context.Background(), "a", fromBytes(archive))
	if err != nil {
		t.Fatal(err)
	}
	if fromDir.Digest != fromTar.Digest {
		t.Errorf("digests differ: dir %s, archive %s", fromDir.Digest, fromTar.Digest)
	}
	// The executable bit counts.
	archive = tarGz(t,
		tarEntry{Name: "run.sh", Body: "#!/bin/sh\n"},
		tarEntry{Name: "lib/a.py", Body: "A = 1\n"},
		tarEntry{Name: "lambda_function.py", Body: lambdaSrc},
	)
	noExec, err := r.Deploy(context.Background(), "a", fromBytes(archive))
	if err != nil {
		t.Fatal(err)
	}
	if noExec.Digest == fromDir.Digest {
		t.Error("the executable bit does not change the digest")
	}
	if fi, _ := os.Stat(filepath.Join(noExec.Dir, "run.sh")); fi.Mode() != 0o444 {
		t.Errorf("run.sh mode %v, want 0444", fi.Mode())
	}
}

func TestDeployRejectsDirectories(t *testing.T) {
	r := openRegistry(t, "", invoker.WithMaxFiles(20), invoker.WithMaxCodeBytes(1<<20))
	ctx := context.Background()
	if _, err := r.Deploy(ctx, "existing", invoker.FromDir("testdata/hello")); err != nil {
		t.Fatal(err)
	}
	hello := map[string]string{"lambda_function.py": lambdaSrc}
	outside := t.TempDir()

	for _, tc := range []struct {
		name  string
		setup func(dir string) error // on a directory holding hello
		files map[string]string      // instead of hello
		want  string
		is    error
	}{
		{name: "symlink outside", setup: func(d string) error { return os.Symlink(outside, filepath.Join(d, "out")) },
			want: "symlink out points outside the directory", is: invoker.ErrInvalid},
		{name: "symlink to /", setup: func(d string) error { return os.Symlink("/", filepath.Join(d, "root")) },
			want: "points outside", is: invoker.ErrInvalid},
		{name: "relative symlink escaping", setup: func(d string) error { return os.Symlink("../../etc/passwd", filepath.Join(d, "pw")) },
			want: "pw", is: invoker.ErrInvalid},
		{name: "dangling symlink", setup: func(d string) error { return os.Symlink("nowhere", filepath.Join(d, "dangling")) },
			want: "symlink dangling does not resolve", is: invoker.ErrInvalid},
		{name: "fifo", setup: func(d string) error { return syscall.Mkfifo(filepath.Join(d, "pipe"), 0o644) },
			want: "pipe is a FIFO", is: invoker.ErrInvalid},
		{name: "socket", setup: func(d string) error {
			fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
			if err != nil {
				return err
			}
			defer syscall.Close(fd)
			return syscall.Bind(fd, &syscall.SockaddrUnix{Name: filepath.Join(d, "sock")})
		}, want: "sock is a socket", is: invoker.ErrInvalid},
		{name: "setuid file", setup: func(d string) error {
			return os.Chmod(filepath.Join(d, "lambda_function.py"), 0o644|fs.ModeSetuid)
		}, want: "lambda_function.py is setuid or setgid", is: invoker.ErrInvalid},
		{name: "too many files", setup: func(d string) error {
			for i := range 20 {
				if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d.py", i)), nil, 0o644); err != nil {
					return err
				}
			}
			return nil
		}, want: "more than 20 files", is: invoker.ErrTooLarge},
		{name: "too large", setup: func(d string) error {
			return os.WriteFile(filepath.Join(d, "big.bin"), make([]byte, 1<<20+1), 0o644)
		}, want: "big.bin takes the code past 1048576 bytes", is: invoker.ErrTooLarge},
		{name: "not a directory", setup: func(d string) error { return nil }, want: "is not a directory", is: invoker.ErrInvalid},
		{name: "missing directory", want: "source directory", is: invoker.ErrInvalid},
		{name: "missing handler module", files: map[string]string{"main.py": lambdaSrc},
			want: "module file lambda_function.py not found in the code (the code has main.py", is: invoker.ErrInvalid},
		{name: "missing handler function", files: map[string]string{"lambda_function.py": "def handle(e, c): pass\n"},
			want: "does not define lambda_handler", is: invoker.ErrInvalid},
		{name: "empty directory", files: map[string]string{}, want: "module file lambda_function.py not found", is: invoker.ErrInvalid},
		{name: "bad manifest", files: map[string]string{"lambda_function.py": lambdaSrc, "sockfaas.yaml": "memory_mb: 64\ncolour: red\n"},
			want: `unknown field "colour"`, is: invoker.ErrInvalid},
		{name: "bad runtime", files: map[string]string{"lambda_function.py": lambdaSrc, "sockfaas.yaml": "runtime: nodejs20.x\n"},
			want: `runtime "nodejs20.x" is not supported`, is: invoker.ErrInvalid},
		{name: "missing requirement", files: map[string]string{"lambda_function.py": lambdaSrc, "sockfaas.yaml": "requirements: [numpy, tensorflow]", "requirements.txt": "torch\n"},
			want: "requirement not installed: tensorflow (sockfaas.yaml requirements[1]): not installed; torch (requirements.txt line 1): not installed", is: zygote.ErrMissingRequirement},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := tc.files
			if files == nil {
				files = hello
			}
			src := writeTree(t, files)
			switch tc.name {
			case "not a directory":
				src = filepath.Join(src, "lambda_function.py")
			case "missing directory":
				src = filepath.Join(src, "missing")
			}
			if tc.setup != nil {
				if err := tc.setup(src); err != nil {
					t.Fatal(err)
				}
			}
			for _, name := range []string{"existing", "new"} {
				err := unchanged(t, r, func() error {
					_, err := r.Deploy(ctx, name, invoker.FromDir(src))
					return err
				})
				if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("deploy %s: %v\nwant %v containing %q", name, err, tc.is, tc.want)
				}
				if !strings.HasPrefix(err.Error(), fmt.Sprintf("deploy %q: ", name)) {
					t.Errorf("error does not name the function: %v", err)
				}
			}
		})
	}

	t.Run("missing requirement details", func(t *testing.T) {
		src := writeTree(t, map[string]string{"lambda_function.py": lambdaSrc, "requirements.txt": "numpy\nnot-a-package\n"})
		_, err := r.Deploy(ctx, "new", invoker.FromDir(src))
		var missing *zygote.MissingRequirementsError
		if !errors.As(err, &missing) || len(missing.Missing) != 1 || missing.Missing[0].Requirement.Name != "not-a-package" {
			t.Fatalf("got %v (%+v)", err, missing)
		}
		if !errors.Is(err, invoker.ErrInvalid) {
			t.Errorf("a missing requirement is not ErrInvalid: %v", err)
		}
	})

	t.Run("device", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("making a device node needs root")
		}
		src := writeTree(t, hello)
		if err := syscall.Mknod(filepath.Join(src, "null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
			t.Fatal(err)
		}
		err := unchanged(t, r, func() error { _, err := r.Deploy(ctx, "new", invoker.FromDir(src)); return err })
		if !errors.Is(err, invoker.ErrInvalid) || !strings.Contains(err.Error(), "null is a character device") {
			t.Errorf("got %v", err)
		}
	})
}

func TestDeployRejectsNames(t *testing.T) {
	r := openRegistry(t, "")
	for _, name := range []string{"", "-a", "_a", "a b", "a:b", "arn:aws:lambda:f", "../x", "a/b", ".", "..",
		"é", strings.Repeat("a", 65), "a\x00", "a\n"} {
		err := unchanged(t, r, func() error {
			_, err := r.Deploy(context.Background(), name, invoker.FromDir("testdata/hello"))
			return err
		})
		if !errors.Is(err, invoker.ErrInvalid) || !strings.Contains(err.Error(), "function name") {
			t.Errorf("name %q: %v", name, err)
		}
	}
	for _, name := range []string{"a", "A1", "9", "my-func_2", strings.Repeat("a", 64)} {
		if err := invoker.ValidateName(name); err != nil {
			t.Errorf("name %q: %v", name, err)
		}
	}
	if _, err := r.Deploy(context.Background(), "x", nil); !errors.Is(err, invoker.ErrInvalid) {
		t.Errorf("nil source: %v", err)
	}
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	r, err := invoker.OpenRegistry(ctx, dir, invoker.WithResolver(fakeResolver))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct{ name, src string }{{"hello", "hello"}, {"pil", "pillow"}, {"hello", "hello"}, {"ol", "openlambda"}} {
		if _, err := r.Deploy(ctx, d.name, invoker.FromDir(filepath.Join("testdata", d.src))); err != nil {
			t.Fatal(err)
		}
	}
	list := r.List()
	versions, _ := r.Versions("hello")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Deploy(ctx, "late", invoker.FromDir("testdata/hello")); !errors.Is(err, invoker.ErrClosed) {
		t.Errorf("deploy after Close: %v, want ErrClosed", err)
	}
	if err := r.Remove(ctx, "hello"); !errors.Is(err, invoker.ErrClosed) {
		t.Errorf("remove after Close: %v, want ErrClosed", err)
	}

	r2 := openRegistry(t, dir)
	if got := r2.List(); !equalFunctions(got, list) {
		t.Errorf("after reopening: %+v\nwant %+v", got, list)
	}
	if got, _ := r2.Versions("hello"); !equalFunctions(got, versions) {
		t.Errorf("versions after reopening: %v, want %v", names(got), names(versions))
	}
	fn, err := r2.Deploy(ctx, "hello", invoker.FromDir("testdata/hello"))
	if err != nil || fn.Version != 3 {
		t.Fatalf("deploy after reopening: %+v, %v", fn, err)
	}
}

// equalFunctions compares functions, times with Equal (JSON drops the
// monotonic clock reading).
func equalFunctions(a, b []*invoker.Function) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := *a[i], *b[i]
		if !x.Created.Equal(y.Created) {
			return false
		}
		x.Created, y.Created = time.Time{}, time.Time{}
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

func TestOpenCleansCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	r, err := invoker.OpenRegistry(ctx, dir, invoker.WithResolver(fakeResolver))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Deploy(ctx, "hello", invoker.FromDir("testdata/hello")); err != nil {
		t.Fatal(err)
	}
	r.Close()

	// What a crash can leave: a half-staged deploy (read-only, as sealing
	// leaves it), a half-removed function, the directory of a name whose
	// first version never arrived; and what no crash makes but a disk
	// might: a version without its metadata, and a stray file.
	staged := filepath.Join(dir, "tmp", "deploy-123", "code")
	if err := os.MkdirAll(filepath.Join(staged, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staged, "lib", "x.py"), []byte("x"), 0o444); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(staged, "lib"), staged} {
		if err := os.Chmod(d, 0o555); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp", "remove-gone-abc", "1", "code"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "functions", "ghost"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "functions", "broken", "1", "code"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "functions", "stray.txt"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	r2 := openRegistry(t, dir, invoker.WithRegistryLogger(zerolog.New(&logs)))
	if entries, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(entries) != 0 {
		t.Errorf("tmp still holds %v", entries)
	}
	if _, err := os.Stat(filepath.Join(dir, "functions", "ghost")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the empty function directory is still there: %v", err)
	}
	if got := names(r2.List()); !slices.Equal(got, []string{"hello@1"}) {
		t.Errorf("List = %v", got)
	}
	for _, want := range []string{"deploy-123", "remove-gone-abc", `"func":"broken"`, "skipping an unreadable function version", "stray.txt"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log does not mention %s:\n%s", want, logs.String())
		}
	}
	// The broken version's number is not reused.
	fn, err := r2.Deploy(ctx, "broken", invoker.FromDir("testdata/hello"))
	if err != nil || fn.Version != 2 {
		t.Errorf("deploy over a broken version: %+v, %v", fn, err)
	}
}

func TestOpenBusy(t *testing.T) {
	dir := t.TempDir()
	r := openRegistry(t, dir)
	if _, err := invoker.OpenRegistry(context.Background(), dir, invoker.WithResolver(fakeResolver)); !errors.Is(err, invoker.ErrBusy) {
		t.Fatalf("second open: %v, want ErrBusy", err)
	}
	r.Close()
	openRegistry(t, dir)
}

func TestOpenRejectsOptions(t *testing.T) {
	for _, o := range []invoker.RegistryOption{invoker.WithKeepVersions(-1), invoker.WithMaxFiles(0), invoker.WithMaxCodeBytes(0)} {
		if _, err := invoker.OpenRegistry(context.Background(), t.TempDir(), o); !errors.Is(err, invoker.ErrInvalid) {
			t.Errorf("got %v, want ErrInvalid", err)
		}
	}
}

func TestRemove(t *testing.T) {
	r := openRegistry(t, "")
	ctx := context.Background()
	for range 2 {
		if _, err := r.Deploy(ctx, "hello", invoker.FromDir("testdata/hello")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Deploy(ctx, "other", invoker.FromDir("testdata/hello")); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(ctx, "hello"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("hello"); !errors.Is(err, invoker.ErrNotFound) {
		t.Errorf("Get after Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.Dir(), "functions", "hello")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("files left: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(r.Dir(), "tmp")); len(entries) != 0 {
		t.Errorf("tmp holds %v", entries)
	}
	if got := names(r.List()); !slices.Equal(got, []string{"other@1"}) {
		t.Errorf("List = %v", got)
	}
	err := unchanged(t, r, func() error { return r.Remove(ctx, "hello") })
	if !errors.Is(err, invoker.ErrNotFound) || err.Error() != `remove "hello": function not found` {
		t.Errorf("second Remove: %v", err)
	}
	if err := r.Remove(ctx, "../other"); !errors.Is(err, invoker.ErrInvalid) {
		t.Errorf("Remove(../other): %v", err)
	}
	fn, err := r.Deploy(ctx, "hello", invoker.FromDir("testdata/hello"))
	if err != nil || fn.Version != 1 {
		t.Errorf("deploy after Remove: %+v, %v", fn, err)
	}
}

func TestConcurrentDeploys(t *testing.T) {
	r := openRegistry(t, "", invoker.WithKeepVersions(3))
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	versions := make(chan int, n)
	errs := make(chan error, 3*n)
	for i := range n {
		wg.Go(func() {
			fn, err := r.Deploy(ctx, "same", invoker.FromDir("testdata/hello"))
			if err != nil {
				errs <- err
				return
			}
			versions <- fn.Version
		})
		wg.Go(func() {
			if _, err := r.Deploy(ctx, fmt.Sprintf("f%d", i), invoker.FromDir("testdata/openlambda")); err != nil {
				errs <- err
			}
		})
		wg.Go(func() { // readers, and failing deploys, alongside
			r.List()
			_, _ = r.Get("same")
			if _, err := r.Deploy(ctx, "same", invoker.FromDir("testdata")); err == nil {
				errs <- errors.New("deploying testdata/ succeeded")
			}
		})
	}
	wg.Wait()
	close(versions)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var got []int
	for v := range versions {
		got = append(got, v)
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Errorf("versions %v, want 1..8 once each", got)
	}
	vs, _ := r.Versions("same")
	if !slices.Equal(names(vs), []string{"same@5", "same@6", "same@7", "same@8"}) {
		t.Errorf("kept %v", names(vs))
	}
	entries, _ := os.ReadDir(filepath.Join(r.Dir(), "functions", "same"))
	if len(entries) != 4 {
		t.Errorf("on disk: %v", entries)
	}
	if len(r.List()) != n+1 {
		t.Errorf("List = %v", names(r.List()))
	}
	if entries, _ := os.ReadDir(filepath.Join(r.Dir(), "tmp")); len(entries) != 0 {
		t.Errorf("tmp holds %v", entries)
	}
}

func TestDeployCanceled(t *testing.T) {
	r := openRegistry(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := unchanged(t, r, func() error { _, err := r.Deploy(ctx, "hello", invoker.FromDir("testdata/hello")); return err })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v", err)
	}
}

// The real resolver: this machine's /usr/bin/python3 with Debian's numpy
// and Pillow.
func TestDeployRealResolver(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	ctx := context.Background()
	dir := t.TempDir()
	t.Cleanup(func() { makeWritable(t, dir) })
	r, err := invoker.OpenRegistry(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := os.Stat(filepath.Join(r.Dir(), "runtime", "resolve.py")); err != nil {
		t.Fatalf("the runtime was not written: %v", err)
	}
	fn, err := r.Deploy(ctx, "pil", invoker.FromDir("testdata/pillow"))
	if errors.Is(err, zygote.ErrMissingRequirement) {
		t.Skipf("numpy or Pillow not installed (apt-get install python3-numpy python3-pil): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"numpy", "PIL"} {
		if !slices.Contains(fn.Imports, want) {
			t.Errorf("imports %q lack %s", fn.Imports, want)
		}
	}

	src := writeTree(t, map[string]string{
		"lambda_function.py": lambdaSrc,
		"requirements.txt":   "numpy>=999\nsockfaas-no-such-package\nPillow\n",
	})
	err = unchanged(t, r, func() error { _, err := r.Deploy(ctx, "pil", invoker.FromDir(src)); return err })
	var missing *zygote.MissingRequirementsError
	if !errors.Is(err, zygote.ErrMissingRequirement) || !errors.As(err, &missing) || len(missing.Missing) != 2 {
		t.Fatalf("got %v", err)
	}
	for _, want := range []string{"numpy>=999 (requirements.txt line 1): version", "does not satisfy >=999",
		"sockfaas-no-such-package (requirements.txt line 2): not installed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v\nlacks %q", err, want)
		}
	}
}

// A function deployed from a directory, then redeployed; the resolver is
// injected so that the example runs without Python.
func ExampleRegistry() {
	ctx := context.Background()
	state, _ := os.MkdirTemp("", "registry-example-")
	defer os.RemoveAll(state)
	code, _ := os.MkdirTemp("", "code-example-")
	defer os.RemoveAll(code)
	_ = os.WriteFile(filepath.Join(code, "lambda_function.py"),
		[]byte("def lambda_handler(event, context):\n    return {'hello': event.get('name')}\n"), 0o644)
	_ = os.WriteFile(filepath.Join(code, "sockfaas.yaml"), []byte("memory_mb: 256\ntimeout_sec: 10\n"), 0o644)

	noRequirements := func(context.Context, []zygote.Requirement) (map[string]zygote.Resolution, error) {
		return nil, nil
	}
	reg, err := invoker.OpenRegistry(ctx, state, invoker.WithResolver(noRequirements))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()

	fn, err := reg.Deploy(ctx, "hello", invoker.FromDir(code))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(fn.Name, fn.Version, fn.Manifest.Handler, fn.Manifest.MemoryMB, fn.Manifest.Timeout())

	fn, _ = reg.Deploy(ctx, "hello", invoker.FromDir(code))
	fmt.Println(fn.Name, fn.Version)
	for _, fn := range reg.List() {
		fmt.Println(fn.Name, fn.Version, fn.Digest[:7])
	}

	_, err = reg.Deploy(ctx, "bad name", invoker.FromDir(code))
	fmt.Println(errors.Is(err, invoker.ErrInvalid))

	// The code is read-only; Remove deletes it.
	if err := reg.Remove(ctx, "hello"); err != nil {
		fmt.Println(err)
	}
	_, err = reg.Get("hello")
	fmt.Println(errors.Is(err, invoker.ErrNotFound))
	// Output:
	// hello 1 lambda_function.lambda_handler 256 10s
	// hello 2
	// hello 2 sha256:
	// true
	// true
}

// TestHostNetworkNeedsTheOperator: network: host is refused unless the
// registry was opened with WithHostNetwork(true).
func TestHostNetworkNeedsTheOperator(t *testing.T) {
	src := writeTree(t, map[string]string{"lambda_function.py": lambdaSrc, "sockfaas.yaml": "network: host\n"})
	r := openRegistry(t, "")
	if _, err := r.Deploy(context.Background(), "hostnet", invoker.FromDir(src)); !errors.Is(err, invoker.ErrInvalid) {
		t.Fatalf("network: host by default: %v, want ErrInvalid", err)
	}
	if len(r.List()) != 0 {
		t.Fatalf("registry changed: %v", r.List())
	}
	allowed := openRegistry(t, "", invoker.WithHostNetwork(true))
	if _, err := allowed.Deploy(context.Background(), "hostnet", invoker.FromDir(src)); err != nil {
		t.Fatalf("network: host when allowed: %v", err)
	}
}
