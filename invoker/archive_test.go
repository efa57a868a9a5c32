package invoker_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/sockfaas/sockfaas/invoker"
)

func TestDeployFromArchive(t *testing.T) {
	r := openRegistry(t, "")
	archive := tarGz(t,
		tarEntry{Name: "lib/", Type: tar.TypeDir, Mode: 0o700},
		tarEntry{Name: "lib/deep/er/x.py", Body: "X = 1\n"},
		tarEntry{Name: "lambda_function.py", Body: lambdaSrc},
		tarEntry{Name: "./bin//run", Body: "#!/bin/sh\n", Mode: 0o750},
		tarEntry{Name: "sockfaas.yaml", Body: "timeout_sec: 30\nrequirements: [numpy]\n"},
		tarEntry{Name: "lib/deep/", Type: tar.TypeDir}, // after its content: fine
	)
	fn, err := r.Deploy(context.Background(), "tarred", fromBytes(archive))
	if err != nil {
		t.Fatal(err)
	}
	if fn.Manifest.TimeoutSec != 30 || len(fn.Imports) != 1 || fn.Imports[0] != "numpy" {
		t.Errorf("got %+v", fn)
	}
	for name, mode := range map[string]fs.FileMode{
		"lib": fs.ModeDir | 0o555, "lib/deep/er/x.py": 0o444, "bin/run": 0o555, "lambda_function.py": 0o444,
	} {
		fi, err := os.Lstat(filepath.Join(fn.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), mode)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(fn.Dir, "lib/deep/er/x.py")); string(data) != "X = 1\n" {
		t.Errorf("content %q", data)
	}

	// A source is used once.
	src := fromBytes(archive)
	if _, err := r.Deploy(context.Background(), "once", src); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Deploy(context.Background(), "once", src); !errors.Is(err, invoker.ErrInvalid) {
		t.Errorf("second use of an archive source: %v", err)
	}
}

func TestDeployRejectsArchives(t *testing.T) {
	const maxBytes = 1 << 20
	r := openRegistry(t, "", invoker.WithMaxFiles(20), invoker.WithMaxCodeBytes(maxBytes))
	ctx := context.Background()
	if _, err := r.Deploy(ctx, "existing", fromBytes(tarGz(t, tarEntry{Name: "lambda_function.py", Body: lambdaSrc}))); err != nil {
		t.Fatal(err)
	}
	handler := tarEntry{Name: "lambda_function.py", Body: lambdaSrc}
	valid := tarGz(t, handler, tarEntry{Name: "lib/a.py", Body: strings.Repeat("# padding\n", 100)})

	var plainTar bytes.Buffer
	tw := tar.NewWriter(&plainTar)
	_ = tw.WriteHeader(&tar.Header{Name: "lambda_function.py", Mode: 0o644, Size: int64(len(lambdaSrc))})
	_, _ = io.WriteString(tw, lambdaSrc)
	_ = tw.Close()

	var zeroBomb bytes.Buffer // gzip of zeros, not a tar at all
	zw, _ := gzip.NewWriterLevel(&zeroBomb, gzip.BestCompression)
	_, _ = io.CopyN(zw, zeros{}, 4<<20)
	_ = zw.Close()

	badCRC := bytes.Clone(valid)
	badCRC[len(badCRC)-8] ^= 0xff

	many := []tarEntry{handler}
	for i := range 20 {
		many = append(many, tarEntry{Name: "f" + string(rune('a'+i)) + ".py"})
	}

	for _, tc := range []struct {
		name    string
		archive []byte
		want    string
		is      error
	}{
		{"dot-dot", tarGz(t, handler, tarEntry{Name: "../evil", Body: "x"}), `"../evil" has a ".." component`, invoker.ErrInvalid},
		{"dot-dot inside", tarGz(t, handler, tarEntry{Name: "lib/../../evil", Body: "x"}), `".." component`, invoker.ErrInvalid},
		{"dot-dot staying inside", tarGz(t, handler, tarEntry{Name: "lib/../x.py", Body: "x"}), `".." component`, invoker.ErrInvalid},
		{"absolute", tarGz(t, handler, tarEntry{Name: "/etc/passwd", Body: "root::0:0::/:/bin/sh\n"}), `"/etc/passwd" has an absolute name`, invoker.ErrInvalid},
		{"escape sequence", tarGz(t, handler, tarEntry{Name: "a\x1b[2Jb.py", Body: "x"}), "control character", invoker.ErrInvalid},
		{"newline", tarGz(t, handler, tarEntry{Name: "a\nb.py", Body: "x"}), "control character", invoker.ErrInvalid},
		{"not UTF-8", tarGz(t, handler, tarEntry{Name: "a\xffb.py", Body: "x"}), "not valid UTF-8", invoker.ErrInvalid},
		{"symlink to /", tarGz(t, handler, tarEntry{Name: "root", Type: tar.TypeSymlink, Link: "/"}), `"root" is a symlink`, invoker.ErrInvalid},
		{"symlink inside", tarGz(t, handler, tarEntry{Name: "h.py", Type: tar.TypeSymlink, Link: "lambda_function.py"}), "is a symlink", invoker.ErrInvalid},
		{"symlink then write through it", tarGz(t, tarEntry{Name: "etc", Type: tar.TypeSymlink, Link: "/etc"}, tarEntry{Name: "etc/evil", Body: "x"}), "is a symlink", invoker.ErrInvalid},
		{"hard link", tarGz(t, handler, tarEntry{Name: "pw", Type: tar.TypeLink, Link: "/etc/passwd"}), `"pw" is a hard link`, invoker.ErrInvalid},
		{"char device", tarGz(t, handler, tarEntry{Name: "null", Type: tar.TypeChar}), `"null" is a device or FIFO`, invoker.ErrInvalid},
		{"block device", tarGz(t, handler, tarEntry{Name: "sda", Type: tar.TypeBlock}), "is a device or FIFO", invoker.ErrInvalid},
		{"fifo", tarGz(t, handler, tarEntry{Name: "pipe", Type: tar.TypeFifo}), "is a device or FIFO", invoker.ErrInvalid},
		{"unsupported type", tarGz(t, handler, tarEntry{Name: "c", Type: tar.TypeCont}), `"c" has unsupported type '7'`, invoker.ErrInvalid},
		{"setuid", tarGz(t, handler, tarEntry{Name: "su", Body: "x", Mode: 0o4755}), `"su" has the setuid, setgid or sticky bit`, invoker.ErrInvalid},
		{"setgid directory", tarGz(t, handler, tarEntry{Name: "d/", Type: tar.TypeDir, Mode: 0o2755}), "setgid", invoker.ErrInvalid},
		{"sticky", tarGz(t, handler, tarEntry{Name: "d/", Type: tar.TypeDir, Mode: 0o1777}), "sticky", invoker.ErrInvalid},
		{"duplicate", tarGz(t, handler, handler), `"lambda_function.py" appears twice`, invoker.ErrInvalid},
		{"duplicate directory", tarGz(t, handler, tarEntry{Name: "d", Type: tar.TypeDir}, tarEntry{Name: "d/", Type: tar.TypeDir}), `"d/" appears twice`, invoker.ErrInvalid},
		{"directory over a file", tarGz(t, handler, tarEntry{Name: "lambda_function.py/", Type: tar.TypeDir}), "appears twice", invoker.ErrInvalid},
		{"file over a directory", tarGz(t, handler, tarEntry{Name: "d/x", Body: "x"}, tarEntry{Name: "d", Body: "x"}), `"d" appears twice`, invoker.ErrInvalid},
		{"file under a file", tarGz(t, handler, tarEntry{Name: "lambda_function.py/x", Body: "x"}), `is under "lambda_function.py", a file`, invoker.ErrInvalid},
		{"too many files", tarGz(t, many...), "more than 20 files", invoker.ErrTooLarge},
		{"gzip bomb", tarGz(t, handler, tarEntry{Name: "zeros", Zeros: 8 * maxBytes}), "zeros takes the code past 1048576 bytes unpacked", invoker.ErrTooLarge},
		{"files adding up", tarGz(t, handler, tarEntry{Name: "a", Zeros: maxBytes / 2}, tarEntry{Name: "b", Zeros: maxBytes / 2}), "b takes the code past", invoker.ErrTooLarge},
		{"zeros without tar", zeroBomb.Bytes(), "more than 1 MiB of data after the tar archive", invoker.ErrInvalid},
		{"plain tar", plainTar.Bytes(), "not a gzip stream: want a .tar.gz archive", invoker.ErrInvalid},
		{"empty upload", nil, "not a gzip stream", invoker.ErrInvalid},
		{"truncated", valid[:len(valid)/2], "archive is truncated", invoker.ErrInvalid},
		{"bad checksum", badCRC, "malformed archive: gzip: invalid checksum", invoker.ErrInvalid},
		{"empty archive", tarGz(t), "module file lambda_function.py not found", invoker.ErrInvalid},
		{"missing handler", tarGz(t, tarEntry{Name: "lambda_function.py", Body: "def other(e, c): pass\n"}), "does not define lambda_handler", invoker.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, name := range []string{"existing", "new"} {
				err := unchanged(t, r, func() error {
					_, err := r.Deploy(ctx, name, fromBytes(tc.archive))
					return err
				})
				if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("deploy %s: %v\nwant %v containing %q", name, err, tc.is, tc.want)
				}
			}
		})
	}
	// The archive was fine: the escape did not happen anywhere.
	if _, err := os.Lstat(filepath.Join(r.Dir(), "evil")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("../evil escaped: %v", err)
	}
}

// countingReader counts what is read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestArchiveLimitsStopEarly(t *testing.T) {
	ctx := context.Background()

	t.Run("compressed", func(t *testing.T) {
		r := openRegistry(t, "")
		random := make([]byte, 4<<20) // incompressible
		_, _ = rand.Read(random)
		archive := tarGz(t, tarEntry{Name: "lambda_function.py", Body: lambdaSrc}, tarEntry{Name: "data", Body: string(random)})
		const limit = 64 << 10
		cr := &countingReader{r: bytes.NewReader(archive)}
		err := unchanged(t, r, func() error {
			_, err := r.Deploy(ctx, "big", invoker.FromArchive(cr, limit))
			return err
		})
		if !errors.Is(err, invoker.ErrTooLarge) || !strings.Contains(err.Error(), "archive is larger than 65536 bytes") {
			t.Fatalf("got %v", err)
		}
		if cr.n > limit+1 {
			t.Errorf("read %d bytes of a %d-byte limit", cr.n, limit)
		}
		// No limit on the compressed size: the unpacked limit still holds.
		fn, err := r.Deploy(ctx, "big", invoker.FromArchive(bytes.NewReader(archive), 0))
		if err != nil || fn.Version != 1 {
			t.Errorf("without a compressed limit: %v", err)
		}
	})

	t.Run("unpacked, default limit", func(t *testing.T) {
		// The header of a 300 MiB file of zeros, and nothing after it: the
		// header alone must be enough to refuse it.
		r := openRegistry(t, "")
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		_ = tw.WriteHeader(&tar.Header{Name: "lambda_function.py", Mode: 0o644, Size: int64(len(lambdaSrc))})
		_, _ = io.WriteString(tw, lambdaSrc)
		_ = tw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: 300 << 20})
		_ = tw.Flush()
		_ = zw.Close()
		err := unchanged(t, r, func() error {
			_, err := r.Deploy(ctx, "bomb", invoker.FromArchive(bytes.NewReader(buf.Bytes()), 10<<20))
			return err
		})
		if !errors.Is(err, invoker.ErrTooLarge) || !strings.Contains(err.Error(), "past 262144000 bytes") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("reader error", func(t *testing.T) {
		r := openRegistry(t, "")
		boom := errors.New("connection reset")
		archive := tarGz(t, tarEntry{Name: "lambda_function.py", Body: lambdaSrc})
		src := io.MultiReader(bytes.NewReader(archive[:20]), iotest.ErrReader(boom))
		err := unchanged(t, r, func() error {
			_, err := r.Deploy(ctx, "f", invoker.FromArchive(src, 1<<20))
			return err
		})
		if !errors.Is(err, boom) || errors.Is(err, invoker.ErrInvalid) || !strings.Contains(err.Error(), "read archive: connection reset") {
			t.Fatalf("got %v; want the reader's error, not ErrInvalid", err)
		}
	})
}
