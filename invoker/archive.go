package invoker

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Source is where Deploy takes a function's code from: a directory
// (FromDir) or a .tar.gz archive (FromArchive). Deploy copies it into the
// registry; nothing refers to the source afterwards.
type Source interface {
	// stage copies the code into dst, an empty directory, within lim.
	stage(ctx context.Context, dst *os.Root, lim limits) error
	fmt.Stringer
}

// limits bound what a Source may put into the registry.
type limits struct {
	maxFiles int   // entries of any type
	maxBytes int64 // sum of regular file sizes
}

// tally counts what a Source stages against its limits.
type tally struct {
	lim   limits
	files int
	bytes int64
}

func (t *tally) entry() error {
	t.files++
	if t.files > t.lim.maxFiles {
		return fmt.Errorf("%w: more than %d files", ErrTooLarge, t.lim.maxFiles)
	}
	return nil
}

// left is how many more bytes of file content fit.
func (t *tally) left() int64 { return t.lim.maxBytes - t.bytes }

func (t *tally) add(name string, n int64) error {
	if n > t.left() {
		return fmt.Errorf("%w: %s takes the code past %d bytes unpacked", ErrTooLarge, name, t.lim.maxBytes)
	}
	t.bytes += n
	return nil
}

// FromDir deploys the code in the directory dir. Regular files and
// directories are copied; a symbolic link is kept (as a relative link)
// when it resolves inside dir and refused otherwise; any other file type
// (device, FIFO, socket) is refused, and so is a setuid or setgid file.
// The setgid and sticky bits of directories are ignored: modes are never
// copied, only whether a file is executable. Everything else is copied,
// hidden files and __pycache__ included: point it at the function's code,
// not at a project with its virtualenv and .git.
func FromDir(dir string) Source { return dirSource{dir: dir} }

type dirSource struct{ dir string }

func (s dirSource) String() string { return "directory " + s.dir }

func (s dirSource) stage(ctx context.Context, dst *os.Root, lim limits) error {
	base, err := filepath.EvalSymlinks(s.dir)
	if err != nil {
		return fmt.Errorf("%w: source directory: %w", ErrInvalid, err)
	}
	if base, err = filepath.Abs(base); err != nil {
		return err
	}
	if fi, err := os.Stat(base); err != nil {
		return fmt.Errorf("%w: source directory: %w", ErrInvalid, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("%w: source %s is not a directory", ErrInvalid, s.dir)
	}
	t := tally{lim: lim}
	return filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read source: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(base, p)
		if err != nil || rel == "." {
			return err
		}
		if err := t.entry(); err != nil {
			return err
		}
		if err := plainName(rel); err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("read source: %w", err)
		}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			return dst.Mkdir(rel, 0o755)
		case mode.IsRegular():
			if mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
				return fmt.Errorf("%w: %s is setuid or setgid", ErrInvalid, rel)
			}
			if info.Size() > t.left() {
				return fmt.Errorf("%w: %s takes the code past %d bytes", ErrTooLarge, rel, lim.maxBytes)
			}
			return copyFile(p, info, dst, rel, &t)
		case mode&fs.ModeSymlink != 0:
			target, err := filepath.EvalSymlinks(p)
			if err != nil {
				return fmt.Errorf("%w: symlink %s does not resolve: %w", ErrInvalid, rel, err)
			}
			if !within(base, target) {
				return fmt.Errorf("%w: symlink %s points outside the directory, to %s", ErrInvalid, rel, target)
			}
			// p's parents are real directories (WalkDir does not follow
			// links), so this relative target works in the copy too.
			relTarget, err := filepath.Rel(filepath.Dir(p), target)
			if err != nil {
				return err
			}
			return dst.Symlink(relTarget, rel)
		default:
			return fmt.Errorf("%w: %s is a %s: only regular files, directories and symlinks are deployed", ErrInvalid, rel, typeName(mode))
		}
	})
}

// copyFile copies the regular file p, as lstat saw it, to name in dst.
func copyFile(p string, seen fs.FileInfo, dst *os.Root, name string, t *tally) error {
	// O_NOFOLLOW and O_NONBLOCK: if p was swapped for a link or a FIFO
	// since lstat, fail instead of following it or blocking.
	in, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("read source: %w", err)
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil || !os.SameFile(fi, seen) {
		return fmt.Errorf("%w: %s changed while it was copied", ErrInvalid, name)
	}
	return writeFile(dst, name, in, seen.Mode()&0o111 != 0, t)
}

// writeFile creates name in dst with at most t.left() bytes from r.
func writeFile(dst *os.Root, name string, r io.Reader, exec bool, t *tally) error {
	out, err := dst.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	mode := fs.FileMode(0o644)
	if exec {
		mode = 0o755
	}
	if err := out.Chmod(mode); err != nil { // not subject to the umask
		return err
	}
	left := t.left()
	n, err := io.Copy(out, io.LimitReader(r, left+1))
	if err != nil {
		return err
	}
	if err := t.add(name, n); err != nil {
		return err
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return out.Close()
}

func within(base, p string) bool {
	rel, err := filepath.Rel(base, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

// FromArchive deploys the code in a gzip-compressed tar archive read from r,
// as uploaded to the HTTP API. The source can be used once.
//
// Reading stops with ErrTooLarge as soon as more than maxBytes compressed
// bytes arrive (maxBytes <= 0: no compressed limit), and as soon as the
// unpacked files would pass the registry's limits (WithMaxCodeBytes,
// WithMaxFiles), which is what stops a gzip bomb. Entries may be regular
// files and directories only: absolute names, ".." components, symlinks,
// hard links, devices and FIFOs, setuid, setgid and sticky bits and a name
// that appears twice are refused (ErrInvalid), never repaired. Owners,
// times and modes other than the executable bit are ignored.
func FromArchive(r io.Reader, maxBytes int64) Source {
	return &archiveSource{r: r, maxBytes: maxBytes}
}

type archiveSource struct {
	r        io.Reader
	maxBytes int64
	used     bool
}

func (s *archiveSource) String() string { return "archive" }

// readError marks an error of the reader under the archive (a client that
// went away), which is not the archive's fault.
type readError struct{ err error }

func (e *readError) Error() string { return "read archive: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// capReader fails with err once more than limit bytes came from r, having
// read at most limit+1. With source set, r's own errors are marked as
// readErrors.
type capReader struct {
	r      io.Reader
	left   int64 // bytes that may still come; the next one over is the error
	err    error
	source bool
}

func newCapReader(r io.Reader, limit int64, err error) *capReader {
	return &capReader{r: r, left: limit, err: err}
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, c.err
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return 0, c.err
	}
	if c.source && err != nil && err != io.EOF {
		err = &readError{err}
	}
	return n, err
}

// Entry kinds while unpacking, to refuse names that appear twice.
const (
	implicitDir = iota + 1
	explicitDir
	regularFile
)

func (s *archiveSource) stage(ctx context.Context, dst *os.Root, lim limits) error {
	if s.used {
		return fmt.Errorf("%w: an archive source can be deployed once", ErrInvalid)
	}
	s.used = true
	limit := s.maxBytes
	if limit <= 0 {
		limit = math.MaxInt64 - 1
	}
	src := newCapReader(s.r, limit, fmt.Errorf("%w: archive is larger than %d bytes", ErrTooLarge, s.maxBytes))
	src.source = true
	br := bufio.NewReader(src)
	if magic, err := br.Peek(2); err != nil || magic[0] != 0x1f || magic[1] != 0x8b {
		if err != nil && !errors.Is(err, io.EOF) {
			return archiveError(err)
		}
		return fmt.Errorf("%w: not a gzip stream: want a .tar.gz archive", ErrInvalid)
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return archiveError(err)
	}
	// The tar stream holds headers and padding besides file contents;
	// allow them generously, the file sizes are checked exactly below.
	unpacked := lim.maxBytes + int64(lim.maxFiles+1)*8192
	dr := newCapReader(zr, unpacked, fmt.Errorf("%w: archive unpacks to more than %d bytes", ErrTooLarge, unpacked))
	tr := tar.NewReader(dr)
	t := tally{lim: lim}
	seen := map[string]int{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return archiveError(err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // metadata for the whole archive (git archive writes one)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "" { // "./", the archive's root
			continue
		}
		if hdr.Mode&(unix.S_ISUID|unix.S_ISGID|unix.S_ISVTX) != 0 {
			return fmt.Errorf("%w: archive entry %q has the setuid, setgid or sticky bit", ErrInvalid, hdr.Name)
		}
		if err := t.entry(); err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if k := seen[name]; k == explicitDir || k == regularFile {
				return fmt.Errorf("%w: archive entry %q appears twice", ErrInvalid, hdr.Name)
			}
			if err := markParents(seen, name); err != nil {
				return err
			}
			seen[name] = explicitDir
			if err := dst.MkdirAll(name, 0o755); err != nil {
				return archiveError(err)
			}
		case tar.TypeReg:
			if seen[name] != 0 {
				return fmt.Errorf("%w: archive entry %q appears twice", ErrInvalid, hdr.Name)
			}
			if err := markParents(seen, name); err != nil {
				return err
			}
			seen[name] = regularFile
			if hdr.Size > t.left() {
				return fmt.Errorf("%w: %s takes the code past %d bytes unpacked", ErrTooLarge, name, lim.maxBytes)
			}
			if dir := path.Dir(name); dir != "." {
				if err := dst.MkdirAll(dir, 0o755); err != nil {
					return archiveError(err)
				}
			}
			if err := writeFile(dst, name, tr, hdr.Mode&0o111 != 0, &t); err != nil {
				return archiveError(err)
			}
		case tar.TypeSymlink:
			return fmt.Errorf("%w: archive entry %q is a symlink: archives may hold regular files and directories only", ErrInvalid, hdr.Name)
		case tar.TypeLink:
			return fmt.Errorf("%w: archive entry %q is a hard link: archives may hold regular files and directories only", ErrInvalid, hdr.Name)
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return fmt.Errorf("%w: archive entry %q is a device or FIFO: archives may hold regular files and directories only", ErrInvalid, hdr.Name)
		default:
			return fmt.Errorf("%w: archive entry %q has unsupported type %s", ErrInvalid, hdr.Name, strconv.QuoteRune(rune(hdr.Typeflag)))
		}
	}
	// Read to the end, within the same limits, so that gzip checks its CRC
	// and a truncated upload is noticed.
	if _, err := io.Copy(io.Discard, newCapReader(dr, 1<<20, fmt.Errorf("%w: more than 1 MiB of data after the tar archive", ErrInvalid))); err != nil {
		return archiveError(err)
	}
	return nil
}

// archiveError says whose fault err is: the reader's and the limits' errors
// keep their meaning, anything else is a malformed archive.
func archiveError(err error) error {
	var re *readError
	switch {
	case errors.As(err, &re), errors.Is(err, ErrTooLarge), errors.Is(err, ErrInvalid):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: archive is truncated", ErrInvalid)
	}
	return fmt.Errorf("%w: malformed archive: %w", ErrInvalid, err)
}

// plainName refuses a file name that is not valid UTF-8 or holds control
// characters: such names end up in logs, listings and terminals.
func plainName(name string) error {
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: file name %q is not valid UTF-8", ErrInvalid, name)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: file name %q has a control character", ErrInvalid, name)
		}
	}
	return nil
}

// entryName checks an archive entry's name and returns it cleaned, "" for
// the root.
func entryName(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("%w: archive entry with an empty name", ErrInvalid)
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("%w: archive entry %q has an absolute name", ErrInvalid, name)
	case strings.IndexByte(name, 0) >= 0:
		return "", fmt.Errorf("%w: archive entry %q has a NUL byte in its name", ErrInvalid, name)
	}
	if err := plainName(name); err != nil {
		return "", err
	}
	for part := range strings.SplitSeq(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: archive entry %q has a \"..\" component", ErrInvalid, name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

// markParents records name's parent directories, which must not be files.
func markParents(seen map[string]int, name string) error {
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		switch seen[dir] {
		case regularFile:
			return fmt.Errorf("%w: archive entry %q is under %q, a file", ErrInvalid, name, dir)
		case 0:
			seen[dir] = implicitDir
		}
	}
	return nil
}

// seal makes the staged code what sandboxes bind: files 0444 (0555 when
// executable), directories 0555, everything owned by root when the registry
// runs as root, directories synced (files were synced as written). It
// returns the code's digest: "sha256:" and the hex SHA-256 of every entry in
// lexical order, each as its kind, path, executable bit, size and content
// (a symlink: its target). Names, contents and executable bits make the
// digest, not times, owners or the source's kind, so the same files give
// the same digest from a directory and from an archive.
func seal(ctx context.Context, root *os.Root) (string, error) {
	h := sha256.New()
	asRoot := os.Geteuid() == 0
	var dirs []string
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case d.IsDir():
			dirs = append(dirs, p)
			fmt.Fprintf(h, "d\x00%s\x00", p)
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			target, err := root.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "l\x00%s\x00%s\x00", p, target)
			if asRoot {
				return root.Lchown(p, 0, 0)
			}
			return nil
		case !d.Type().IsRegular():
			return fmt.Errorf("%s: unexpected file type %v", p, d.Type())
		}
		f, err := root.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		exec, mode := 0, fs.FileMode(0o444)
		if fi.Mode()&0o111 != 0 {
			exec, mode = 1, 0o555
		}
		fmt.Fprintf(h, "f\x00%s\x00%d\x00%d\x00", p, exec, fi.Size())
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		if asRoot {
			if err := f.Chown(0, 0); err != nil {
				return err
			}
		}
		return f.Chmod(mode)
	})
	if err != nil {
		return "", fmt.Errorf("seal code: %w", err)
	}
	// Deepest first, so that a directory is still writable while its
	// children change.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := sealDir(root, dirs[i], asRoot); err != nil {
			return "", fmt.Errorf("seal code: %w", err)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func sealDir(root *os.Root, name string, asRoot bool) error {
	d, err := root.OpenFile(name, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	if asRoot {
		if err := d.Chown(0, 0); err != nil {
			return err
		}
	}
	if err := d.Chmod(0o555); err != nil {
		return err
	}
	return d.Sync()
}
