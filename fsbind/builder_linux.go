package fsbind

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/internal/fsutil"
)

// templateDir holds, under the work directory, what every root shares: the
// generated /etc, the /dev tmpfs and read-only binds of the host base. The
// '+' keeps it out of the namespace of root IDs.
const templateDir = "+template"

// spareDir prefixes the directories of spare roots (WithSpares); like
// templateDir it is outside the namespace of root IDs.
const spareDir = "+spare-"

// rootTmpfs is a root's own tmpfs: it only holds mount points, symlinks and
// the directories leading to mount points, and is read-only once built.
const rootTmpfs = "mode=0755,size=1m"

// hostBaseEntries are the host directories that make up the host base.
var hostBaseEntries = []string{"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"}

// Builder builds roots under one work directory it owns. It is safe for
// concurrent use.
//
// The work directory is a private tmpfs: a root's directories cost no disk
// I/O, no mount made under it propagates to any other mount namespace, and
// one unmount clears it. Only one Builder may use a directory at a time.
type Builder struct {
	cfg config

	dir         string // the work directory, symlinks resolved
	devTemplate string // read-only tmpfs with the device nodes
	emptyDir    string // an empty read-only directory: what MountPoints bind
	umask       uint32

	hostBase plan // the host base's entries, read-only after NewBuilder
	defaults plan // hostBase + appendOwn(DefaultTmpSize): the common case

	mu     sync.RWMutex // Build holds it shared, Close exclusively
	closed atomic.Bool

	// With WithSpares: built default roots, the goroutine that builds
	// them, and how Close stops it.
	spares     chan *Root
	needSpare  chan struct{} // takeSpare tells buildSpares one is gone
	spareSeq   atomic.Uint64
	stopSpares chan struct{}
	sparesDone chan struct{}
	stopOnce   sync.Once
}

// NewBuilder makes dir (mode 0700) and mounts the work tmpfs on it. If dir
// still holds mounts from a process that died, they are cleaned up first
// (see Cleanup); otherwise dir must be missing or empty.
//
// It also prepares what every root shares: a minimal /etc (passwd and group
// with root and nobody, hosts, nsswitch.conf, and copies of the host's
// ld.so.cache, resolv.conf and localtime), a read-only /dev tmpfs with the
// device nodes, and read-only binds of the host base directories. These are
// snapshots: a Builder made before the host's resolv.conf changes keeps
// handing out the old one.
func NewBuilder(ctx context.Context, dir string, opts ...Option) (*Builder, error) {
	b := &Builder{cfg: defaultConfig()}
	for _, o := range opts {
		o(b)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("new builder: %w", err)
	}
	start := time.Now()
	d, err := prepareWorkDir(ctx, dir, b)
	if err != nil {
		return nil, err
	}
	b.dir = d
	b.umask = umask()
	if err := b.mountWork(); err != nil {
		if cerr := Cleanup(context.WithoutCancel(ctx), d); cerr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", cerr))
		}
		return nil, fmt.Errorf("new builder in %s: %w", d, err)
	}
	b.defaults.nodes = append([]node(nil), b.hostBase.nodes...)
	b.defaults.mounts = append([]mountOp(nil), b.hostBase.mounts...)
	appendOwn(&b.defaults, b.devTemplate, DefaultTmpSize)
	if b.cfg.spares > 0 {
		b.spares = make(chan *Root, b.cfg.spares+spareSlack)
		b.needSpare = make(chan struct{}, 1)
		b.stopSpares = make(chan struct{})
		b.sparesDone = make(chan struct{})
		go b.buildSpares()
	}
	b.cfg.log.Info().Str("dir", d).Int("spares", b.cfg.spares).Dur("dur", time.Since(start)).Msg("root builder ready")
	return b, nil
}

// buildSpares keeps at least cfg.spares roots in the spares channel until
// Close. The channel has room for a few more, which only Release fills:
// a released root is cheaper than a new one.
func (b *Builder) buildSpares() {
	defer close(b.sparesDone)
	for {
		if len(b.spares) >= b.cfg.spares {
			select {
			case <-b.needSpare:
				continue
			case <-b.stopSpares:
				return
			}
		}
		r, err := b.buildSpare(b.spareName())
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				b.cfg.log.Warn().Err(err).Msg("cannot build a spare root")
			}
			// Build builds its own meanwhile; try again a little later.
			select {
			case <-b.stopSpares:
				return
			case <-time.After(100 * time.Millisecond):
				continue
			}
		}
		select {
		case b.spares <- r:
		case <-b.stopSpares:
			// Close's Cleanup takes down whatever is left.
			return
		}
	}
}

// spareSlack is how many released roots the spares channel keeps beyond
// WithSpares' n. Every root kept costs every new mount namespace a copy of
// its mounts, so not many.
const spareSlack = 2

// spareName names the next spare root's directory.
func (b *Builder) spareName() string {
	return spareDir + strconv.FormatUint(b.spareSeq.Add(1), 10)
}

func (b *Builder) buildSpare(name string) (*Root, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed.Load() {
		return nil, ErrClosed
	}
	r := b.newRoot(name, nil)
	if err := ignoringEINTR(func() error { return unix.Mkdir(r.Dir, 0o700) }); err != nil {
		return nil, &os.PathError{Op: "mkdir", Path: r.Dir, Err: err}
	}
	if err := b.build(r, &b.defaults); err != nil {
		if terr := r.teardown(); terr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", terr))
		}
		return nil, err
	}
	r.spare.Store(true)
	return r, nil
}

// takeSpare renames a spare root, if one is ready, to id. ok is false
// when there is none; err is set when there was one but id is in use (an
// error matching fs.ErrExist) or the rename failed, in which case the
// spare is gone.
func (b *Builder) takeSpare(id string) (r *Root, ok bool, err error) {
	select {
	case r = <-b.spares:
		select {
		case b.needSpare <- struct{}{}:
		default:
		}
	default:
		return nil, false, nil
	}
	nr, err := b.move(r, id, nil, true)
	if err != nil {
		if terr := r.teardown(); terr != nil {
			b.cfg.log.Warn().Err(terr).Str("dir", r.Dir).Msg("cannot tear down a spare root")
		}
		return nil, true, err
	}
	return nr, true, nil
}

// move renames r's directory to id's and returns it as a new Root with
// mountPoints and spare; the mounts move along with the directory. An
// existing directory of that name is an error matching fs.ErrExist.
func (b *Builder) move(r *Root, id string, mountPoints []string, spare bool) (*Root, error) {
	nr := b.newRoot(id, mountPoints)
	err := ignoringEINTR(func() error {
		return unix.Renameat2(unix.AT_FDCWD, r.Dir, unix.AT_FDCWD, nr.Dir, unix.RENAME_NOREPLACE)
	})
	if err != nil {
		return nil, &os.PathError{Op: "rename", Path: nr.Dir, Err: err}
	}
	nr.spare.Store(spare)
	return nr, nil
}

func (b *Builder) newRoot(id string, mountPoints []string) *Root {
	rdir := b.dir + "/" + id
	return &Root{ID: id, Dir: rdir, Path: rdir + "/root", Scratch: rdir + "/scratch", b: b, mountPoints: mountPoints}
}

// prepareWorkDir makes dir, cleans up a crashed predecessor's mounts, and
// returns dir with symlinks resolved, as mountinfo spells it.
func prepareWorkDir(ctx context.Context, dir string, b *Builder) (string, error) {
	d, err := workDirPath(dir)
	if err != nil {
		return "", fmt.Errorf("new builder: %w", err)
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", fmt.Errorf("new builder: %w", err)
	}
	if d, err = filepath.EvalSymlinks(d); err != nil {
		return "", fmt.Errorf("new builder: %w", err)
	}
	mounts, err := mountsUnder(d)
	if err != nil {
		return "", fmt.Errorf("new builder: %w", err)
	}
	if len(mounts) > 0 {
		b.cfg.log.Info().Str("dir", d).Int("mounts", len(mounts)).Msg("cleaning up roots left by a previous process")
		if err := Cleanup(ctx, d); err != nil {
			return "", fmt.Errorf("new builder: %w", err)
		}
		if err := os.Mkdir(d, 0o700); err != nil {
			return "", fmt.Errorf("new builder: %w", err)
		}
		return d, nil
	}
	f, err := os.Open(d)
	if err != nil {
		return "", fmt.Errorf("new builder: %w", err)
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); err != io.EOF {
		if err == nil {
			return "", fmt.Errorf("new builder: work directory %s is not empty and holds no mounts: refusing to take it over", d)
		}
		return "", fmt.Errorf("new builder: %w", err)
	}
	return d, nil
}

// workDirPath checks a work directory name: absolute, and not "/".
func workDirPath(dir string) (string, error) {
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("work directory %q is not an absolute path", dir)
	}
	d := filepath.Clean(dir)
	if d == "/" {
		return "", errors.New("work directory cannot be /")
	}
	return d, nil
}

// mountWork mounts the work tmpfs and fills the template directory.
func (b *Builder) mountWork() error {
	data := "mode=0700,size=" + strconv.FormatInt(b.cfg.workSize, 10)
	if err := mount("tmpfs", b.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return fmt.Errorf("mount work tmpfs: %w", err)
	}
	// Under a shared parent the tmpfs mount itself has propagated to the
	// parent's peers; from here on nothing does.
	if err := mount("", b.dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make work tmpfs private: %w", err)
	}
	tmpl := filepath.Join(b.dir, templateDir)
	if err := os.Mkdir(tmpl, 0o700); err != nil {
		return err
	}
	b.emptyDir = filepath.Join(tmpl, "empty")
	if err := os.Mkdir(b.emptyDir, 0o555); err != nil {
		return err
	}
	fd, err := unix.Open(tmpl, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", tmpl, os.NewSyscallError("open", err))
	}
	defer unix.Close(fd)
	if err := b.makeEtc(fd, tmpl); err != nil {
		return fmt.Errorf("make /etc template: %w", err)
	}
	if err := b.makeDev(tmpl); err != nil {
		return fmt.Errorf("make /dev template: %w", err)
	}
	if err := b.bindHostBase(fd, tmpl); err != nil {
		return err
	}
	return nil
}

// etcFiles are the generated files of the host base's /etc.
var etcFiles = []struct{ name, content string }{
	{"passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
	{"group", "root:x:0:\nnogroup:x:65534:\n"},
	{"hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
	{"nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"},
}

// etcCopies are copied from the host's /etc when present, contents only (a
// symlink such as /etc/localtime -> /usr/share/zoneinfo/... would not
// resolve the same way inside the root).
var etcCopies = []string{"ld.so.cache", "resolv.conf", "localtime"}

// etcMountPoints are empty directories in the /etc template, so that a
// Spec can bind the host's (say, TLS certificates at /etc/ssl) over them:
// fsbind never creates mount points inside a read-only bind.
var etcMountPoints = []string{"ssl"}

func (b *Builder) makeEtc(tmplfd int, tmpl string) error {
	etc := filepath.Join(tmpl, "etc")
	if err := b.mkdir(etc, 0o755); err != nil {
		return err
	}
	for _, f := range etcFiles {
		if err := writeFile(filepath.Join(etc, f.name), []byte(f.content)); err != nil {
			return err
		}
	}
	for _, name := range etcCopies {
		data, err := os.ReadFile(filepath.Join("/etc", name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(etc, name), data); err != nil {
			return err
		}
	}
	for _, name := range etcMountPoints {
		if err := b.mkdir(filepath.Join(etc, name), 0o755); err != nil {
			return err
		}
	}
	// The symlinks of the host's /etc/alternatives (Debian's
	// update-alternatives): shared libraries are reached through them too
	// (numpy's libblas.so.3 and liblapack.so.3), so a root without them
	// cannot load such packages. They point into the read-only base.
	if err := fsutil.CopySymlinks("/etc/alternatives", filepath.Join(etc, "alternatives")); err != nil {
		return fmt.Errorf("copy /etc/alternatives: %w", err)
	}
	// Bound onto itself read-only, so a root binds it with a single call.
	if err := attach(etc, tmplfd, "etc", attrRO|unix.MOUNT_ATTR_NOEXEC); err != nil {
		return fmt.Errorf("bind read-only: %w", err)
	}
	return nil
}

// devNodes are the character devices of a root's /dev.
var devNodes = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// devLinks are the symlinks of a root's /dev; they resolve once proc is
// mounted inside the root.
var devLinks = []struct{ name, target string }{
	{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"},
}

// makeDev builds the /dev every root binds: a tmpfs (the work tmpfs is
// nodev, so the nodes need their own) made read-only once filled, so that
// sandboxes share it safely. Each root mounts its own /dev/shm on it.
func (b *Builder) makeDev(tmpl string) error {
	dev := filepath.Join(tmpl, "dev")
	if err := os.Mkdir(dev, 0o755); err != nil {
		return err
	}
	const flags = unix.MS_NOSUID | unix.MS_NOEXEC
	if err := mount("tmpfs", dev, "tmpfs", flags, "mode=0755,size=64k,nr_inodes=64"); err != nil {
		return err
	}
	for _, n := range devNodes {
		p := filepath.Join(dev, n.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
			return fmt.Errorf("mknod %s: %w", p, err)
		}
		if err := b.fixMode(p, 0o666); err != nil {
			return err
		}
	}
	for _, l := range devLinks {
		if err := os.Symlink(l.target, filepath.Join(dev, l.name)); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(dev, "shm"), 0o755); err != nil {
		return err
	}
	if err := mount("", dev, "", unix.MS_REMOUNT|unix.MS_RDONLY|flags, ""); err != nil {
		return fmt.Errorf("remount read-only: %w", err)
	}
	b.devTemplate = dev
	return nil
}

// bindHostBase looks at the host base entries once: symlinks are noted,
// directories bound read-only into the template directory, which each root
// then binds with a single mount(2) call. The plan it leaves in b.hostBase
// ends with the generated /etc.
func (b *Builder) bindHostBase(tmplfd int, tmpl string) error {
	base := filepath.Join(tmpl, "base")
	if err := os.Mkdir(base, 0o700); err != nil {
		return err
	}
	for _, name := range hostBaseEntries {
		host := "/" + name
		fi, err := os.Lstat(host)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("host base: %w", err)
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(host)
			if err != nil {
				return fmt.Errorf("host base: %w", err)
			}
			b.hostBase.nodes = append(b.hostBase.nodes, node{rel: name, kind: nodeSymlink, target: target})
		case fi.IsDir():
			if err := os.Mkdir(filepath.Join(base, name), 0o755); err != nil {
				return fmt.Errorf("host base: %w", err)
			}
			if err := attach(host, tmplfd, "base/"+name, attrRO); err != nil {
				return fmt.Errorf("bind %s: %w", host, err)
			}
			b.hostBase.nodes = append(b.hostBase.nodes, node{rel: name, kind: nodeDir})
			b.hostBase.mounts = append(b.hostBase.mounts,
				mountOp{kind: mountTemplate, rel: name, src: filepath.Join(base, name), dir: true})
		}
	}
	b.hostBase.nodes = append(b.hostBase.nodes, node{rel: "etc", kind: nodeDir})
	b.hostBase.mounts = append(b.hostBase.mounts,
		mountOp{kind: mountTemplate, rel: "etc", src: filepath.Join(tmpl, "etc"), dir: true})
	return nil
}

// Build validates spec and builds the root id under the work directory:
// dir/<id>/root (Root.Path) and dir/<id>/scratch (Root.Scratch). An invalid
// spec or id fails with ErrInvalid before anything changes; an id already
// in use fails with an error matching fs.ErrExist; any other failure undoes
// what was done, so no half-built root survives.
//
// The scratch directory is mode 0755 and owned by NobodyID (see
// WithScratchOwner), so the default sandbox user can write it and every
// other user can only read it.
//
// All binds are non-recursive: mounts under a bind's source (say, a
// separate /usr/local filesystem under /usr) do not appear in the root;
// bind them explicitly.
func (b *Builder) Build(ctx context.Context, id string, spec Spec) (*Root, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("build root %q: %w", id, err)
	}
	start := time.Now()
	if err := validID(id); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("build root %q: %w", id, err)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed.Load() {
		return nil, fmt.Errorf("build root %q: %w", id, ErrClosed)
	}
	p, err := b.plan(spec)
	if err != nil {
		return nil, fmt.Errorf("build root %q: %w", id, err)
	}
	if b.spares != nil && spec.IsDefault() {
		r, ok, err := b.takeSpare(id)
		if err != nil {
			return nil, fmt.Errorf("build root %q: %w", id, err)
		}
		if ok {
			b.cfg.log.Debug().Str("sandbox", id).Dur("dur", time.Since(start)).Msg("root built ahead")
			return r, nil
		}
	}
	var mountPoints []string
	for _, mp := range spec.MountPoints {
		mountPoints = append(mountPoints, path.Clean(mp))
	}
	r := b.newRoot(id, mountPoints)
	rdir := r.Dir
	if err := ignoringEINTR(func() error { return unix.Mkdir(rdir, 0o700) }); err != nil {
		return nil, fmt.Errorf("build root %q: %w", id, &os.PathError{Op: "mkdir", Path: rdir, Err: err})
	}
	if err := b.build(r, &p); err != nil {
		if terr := r.teardown(); terr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", terr))
		}
		return nil, fmt.Errorf("build root %q: %w", id, err)
	}
	r.spare.Store(spec.IsDefault())
	b.cfg.log.Debug().Str("sandbox", id).Dur("dur", time.Since(start)).Msg("root built")
	return r, nil
}

// build carries out p for r, whose directory exists and is empty.
func (b *Builder) build(r *Root, p *plan) error {
	if err := b.mkdir(r.Path, 0o755); err != nil {
		return err
	}
	if err := b.mkdir(r.Scratch, 0o755); err != nil {
		return err
	}
	if err := os.Lchown(r.Scratch, b.cfg.scratchUID, b.cfg.scratchGID); err != nil {
		return err
	}
	if err := mount("tmpfs", r.Path, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, rootTmpfs); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	fd, err := unix.Open(r.Path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open root: %w", os.NewSyscallError("open", err))
	}
	defer unix.Close(fd)
	for _, n := range p.nodes {
		if err := b.makeNode(fd, n); err != nil {
			return fmt.Errorf("make /%s: %w", n.rel, err)
		}
	}
	for _, m := range p.mounts {
		if err := b.doMount(r, fd, m); err != nil {
			return err
		}
	}
	// Last, once every mount point exists: the root itself goes read-only.
	// A remount sets every flag afresh, hence nosuid and nodev again.
	if err := mount("", r.Path, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("remount root read-only: %w", err)
	}
	return nil
}

func (b *Builder) makeNode(dirfd int, n node) error {
	switch n.kind {
	case nodeDir:
		if err := ignoringEINTR(func() error { return unix.Mkdirat(dirfd, n.rel, 0o755) }); err != nil {
			return os.NewSyscallError("mkdir", err)
		}
		if b.umask&0o755 != 0 {
			return os.NewSyscallError("chmod", unix.Fchmodat(dirfd, n.rel, 0o755, 0))
		}
	case nodeFile:
		// An empty file: a file mount point.
		return os.NewSyscallError("mknod", ignoringEINTR(func() error {
			return unix.Mknodat(dirfd, n.rel, unix.S_IFREG|0o644, 0)
		}))
	case nodeSymlink:
		return os.NewSyscallError("symlink", ignoringEINTR(func() error {
			return unix.Symlinkat(n.target, dirfd, n.rel)
		}))
	}
	return nil
}

func (b *Builder) doMount(r *Root, rootfd int, m mountOp) error {
	var err error
	switch m.kind {
	case mountTemplate:
		err = mount(m.src, r.Path+"/"+m.rel, "", unix.MS_BIND, "")
	case mountScratch:
		err = mount(r.Scratch, r.Path+"/"+m.rel, "", unix.MS_BIND, "")
	case mountTmpfs:
		err = mount("tmpfs", r.Path+"/"+m.rel, "tmpfs", m.flags, m.data)
	case mountBindRO:
		err = attach(m.src, rootfd, m.rel, attrRO)
	case mountBindRW:
		err = attach(m.src, rootfd, m.rel, attrRW)
	}
	if err != nil {
		if m.src != "" {
			return fmt.Errorf("bind %s at /%s: %w", m.src, m.rel, err)
		}
		return fmt.Errorf("mount /%s: %w", m.rel, err)
	}
	return nil
}

// mkdir makes a directory with exactly mode, whatever the umask.
func (b *Builder) mkdir(p string, mode uint32) error {
	if err := ignoringEINTR(func() error { return unix.Mkdir(p, mode) }); err != nil {
		return &os.PathError{Op: "mkdir", Path: p, Err: err}
	}
	return b.fixMode(p, mode)
}

func (b *Builder) fixMode(p string, mode uint32) error {
	if b.umask&mode == 0 {
		return nil
	}
	if err := unix.Chmod(p, mode); err != nil {
		return &os.PathError{Op: "chmod", Path: p, Err: err}
	}
	return nil
}

func writeFile(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// validID accepts plain names: [a-zA-Z0-9_.-], at most 255 bytes, not "."
// or "..".
func validID(id string) error {
	if id == "" || id == "." || id == ".." || len(id) > 255 {
		return fmt.Errorf("root id %q: %w", id, ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return fmt.Errorf("root id %q: only letters, digits, '_', '.' and '-' are allowed: %w", id, ErrInvalid)
		}
	}
	return nil
}

// Teardown detaches the root's whole mount tree and removes its directory,
// scratch included. It is idempotent, and a no-op once the Builder is
// closed (Close took everything down). Stop the root's processes first:
// their mounts are detached lazily and stay alive while in use, but the
// scratch files go at once.
//
// It never deletes through a mount: if anything is still mounted under
// Root.Dir after the detach, it fails and leaves the files alone.
func (r *Root) Teardown() error {
	if r == nil || r.Dir == "" || r.Path == "" {
		return nil
	}
	if r.b != nil && r.b.closed.Load() {
		return nil
	}
	if r.gone.Load() {
		return nil
	}
	if err := r.teardown(); err != nil {
		return err // Teardown may be tried again
	}
	r.gone.Store(true)
	return nil
}

// Taint marks the root as not to be handed out again: Release tears it
// down. Call it before giving a process anything that can change the root
// beyond its writable directories: a privileged process (which could
// remount the root's filesystems) or a copy of its mount tree.
func (r *Root) Taint() { r.spare.Store(false) }

// Release gives the root back to its Builder once its processes are gone.
// A root of the default Spec that is as it was built (its /tmp, /dev/shm and
// scratch directory empty, with their modes, owners and no extended
// attributes unchanged; nothing bound into it; not tainted) becomes a spare
// again, to be handed out by a later Build under a new ID: no unmount, no
// mount. Any other root, or one the Builder has no room for, is torn down as
// by Teardown. Like Teardown it is idempotent, and the Root must not be used
// afterwards.
func (r *Root) Release() error {
	if r == nil || r.Dir == "" || r.Path == "" {
		return nil
	}
	b := r.b
	if b == nil || b.spares == nil || !r.spare.Load() || len(b.spares) == cap(b.spares) {
		return r.Teardown()
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed.Load() {
		return nil
	}
	if r.gone.Swap(true) {
		return nil
	}
	if !r.pristine() {
		return r.retire()
	}
	nr, err := b.move(r, b.spareName(), nil, true)
	if err != nil {
		b.cfg.log.Warn().Err(err).Str("dir", r.Dir).Msg("cannot keep a released root as a spare")
		return r.retire()
	}
	select {
	case b.spares <- nr:
		b.cfg.log.Debug().Str("sandbox", r.ID).Str("spare", nr.ID).Msg("root kept as a spare")
		return nil
	default: // another Release filled the last place meanwhile
		return nr.teardown()
	}
}

// Rename moves the root, mounts and all, to the directory of a new ID and
// returns it as a new Root; r must not be used afterwards. Processes
// already inside the root are not affected. A root with that ID already
// there is an error matching fs.ErrExist.
func (r *Root) Rename(id string) (*Root, error) {
	if err := validID(id); err != nil {
		return nil, fmt.Errorf("rename root %q: %w", r.ID, err)
	}
	b := r.b
	if b == nil {
		return nil, fmt.Errorf("rename root %q: not built by a Builder: %w", r.ID, ErrInvalid)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed.Load() {
		return nil, fmt.Errorf("rename root %q: %w", r.ID, ErrClosed)
	}
	if r.gone.Load() {
		return nil, fmt.Errorf("rename root %q: released: %w", r.ID, ErrInvalid)
	}
	nr, err := b.move(r, id, r.mountPoints, r.spare.Load())
	if err != nil {
		return nil, fmt.Errorf("rename root %q: %w", r.ID, err)
	}
	r.gone.Store(true)
	return nr, nil
}

// retire tears down a root Release could not keep; if that fails, a later
// Teardown may try again.
func (r *Root) retire() error {
	err := r.teardown()
	if err != nil {
		r.gone.Store(false)
	}
	return err
}

// pristine says whether the root's writable parts are as built. Its other
// mounts are read-only binds and a read-only tmpfs, which an unprivileged
// process cannot change, and a sandbox's own mounts live in its own mount
// namespace.
func (r *Root) pristine() bool {
	return emptyTmpfs(r.Path+"/"+relTmp, 0o1777, 0, 0) &&
		emptyTmpfs(r.Path+"/"+relShm, 0o1777, 0, 0) &&
		emptyDir(r.Scratch, 0o755, r.b.cfg.scratchUID, r.b.cfg.scratchGID)
}

// emptyTmpfs says whether the tmpfs mounted at dir holds nothing but its
// root directory, which still has mode, uid and gid and no extended
// attributes. statfs counts its inodes: no directory listing needed.
func emptyTmpfs(dir string, mode uint32, uid, gid int) bool {
	var fs unix.Statfs_t
	if unix.Statfs(dir, &fs) != nil || fs.Type != unix.TMPFS_MAGIC || fs.Files-fs.Ffree != 1 {
		return false
	}
	return asBuilt(dir, mode, uid, gid)
}

// emptyDir says whether dir has no entries and still has mode, uid, gid
// and no extended attributes.
func emptyDir(dir string, mode uint32, uid, gid int) bool {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	// An empty directory lists "." and ".." and then reaches its end. The
	// kernel hands out only whole entries: a batch may stop before a
	// long name that did not fit, so read until the end.
	var buf [512]byte
	entries := 0
	for {
		n, err := unix.Getdents(fd, buf[:])
		if err != nil || n < 0 {
			return false
		}
		if n == 0 {
			break
		}
		for off := 0; off < n; {
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:])) // linux_dirent64.d_reclen
			if reclen == 0 {
				return false
			}
			off += reclen
			if entries++; entries > 2 {
				return false
			}
		}
	}
	return entries == 2 && asBuilt(dir, mode, uid, gid)
}

func asBuilt(dir string, mode uint32, uid, gid int) bool {
	var st unix.Stat_t
	if unix.Lstat(dir, &st) != nil || st.Mode&0o7777 != mode || int(st.Uid) != uid || int(st.Gid) != gid ||
		st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return false
	}
	n, err := unix.Llistxattr(dir, nil)
	return err == nil && n == 0
}

func (r *Root) teardown() error {
	if err := r.detach(); err != nil {
		return fmt.Errorf("tear down root %q: %w", r.ID, err)
	}
	// The fast way first: three rmdirs. rmdir never deletes through a mount
	// point (EBUSY); a non-empty directory falls back to removeTree, which
	// checks every directory before descending.
	for i, p := range []string{r.Path, r.Scratch, r.Dir} {
		err := ignoringEINTR(func() error { return unix.Rmdir(p) })
		// EBUSY at Path: a mount was stacked on the root's own; detach
		// that one too.
		for n := 0; err == unix.EBUSY && i == 0 && n < 16; n++ {
			if err := r.detach(); err != nil {
				return fmt.Errorf("tear down root %q: %w", r.ID, err)
			}
			err = ignoringEINTR(func() error { return unix.Rmdir(p) })
		}
		switch err {
		case nil, unix.ENOENT:
		case unix.ENOTEMPTY, unix.EEXIST:
			if err := removeTree(unix.AT_FDCWD, p, p, 0); err != nil {
				return fmt.Errorf("tear down root %q: %w", r.ID, err)
			}
		default:
			return fmt.Errorf("tear down root %q: %w", r.ID, &os.PathError{Op: "rmdir", Path: p, Err: err})
		}
	}
	if r.b != nil {
		r.b.cfg.log.Debug().Str("sandbox", r.ID).Msg("root torn down")
	}
	return nil
}

// Bind mounts source read-only at dest, one of the root's
// Spec.MountPoints, on top of the empty directory there. Roots are built
// ahead of time (a cache of generic sandboxes); this is how one later gets
// a function's code. Binding a mount point twice stacks the new mount on
// the old one. A process already inside the root sees the mount only if
// it entered after Bind (a copy of the root taken earlier with Clone does
// not change).
func (r *Root) Bind(source, dest string) error {
	r.Taint()
	dest = path.Clean(dest)
	if !slices.Contains(r.mountPoints, dest) {
		return fmt.Errorf("bind %q: not one of the root's mount points %v: %w", dest, r.mountPoints, ErrInvalid)
	}
	if !filepath.IsAbs(source) {
		return fmt.Errorf("bind source %q is not an absolute path: %w", source, ErrInvalid)
	}
	st, err := os.Stat(source)
	if err != nil || !st.IsDir() {
		return fmt.Errorf("bind source %q: must be an existing directory: %w", source, ErrInvalid)
	}
	rootfd, err := unix.Open(r.Path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bind %q: open root: %w", dest, os.NewSyscallError("open", err))
	}
	defer unix.Close(rootfd)
	if err := attach(source, rootfd, dest[1:], attrRO); err != nil {
		return fmt.Errorf("bind %s at %q: %w", source, dest, err)
	}
	return nil
}

// Clone returns a detached copy of the root's whole mount tree
// (open_tree(2) with OPEN_TREE_CLONE|AT_RECURSIVE), read-only flags and all.
// The copy shares the root's filesystems: writes to its /scratch show up in
// Root.Scratch.
//
// It lets a process enter the root from a mount namespace of its own that
// does not hold every other root: hand it the file (SCM_RIGHTS), and there
// it attaches the copy with move_mount(2) and pivots into it. Copying the
// Builder's namespace instead (unshare(CLONE_NEWNS) next to it) copies
// every mount of every root, at about 12 µs per root.
//
// Closing the file without attaching the copy discards it. Teardown does not
// reach copies attached elsewhere; they go with their mount namespace.
func (r *Root) Clone() (*os.File, error) {
	fd, err := openTree(unix.AT_FDCWD, r.Path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return nil, fmt.Errorf("clone root %q: %w", r.ID, err)
	}
	return os.NewFile(uintptr(fd), r.Path), nil
}

// detach lazily unmounts the mount at r.Path and, with it, everything
// mounted under it. Nothing mounted there is fine.
func (r *Root) detach() error {
	err := unmount(r.Path, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", r.Path, err)
}

// Close tears down every root still under the work directory, unmounts
// the work tmpfs and removes the directory. Builds in flight finish first;
// later ones fail with ErrClosed. Roots handed out earlier need no
// Teardown afterwards (it is a no-op).
func (b *Builder) Close(ctx context.Context) error {
	if b.stopSpares != nil {
		// Before the lock: the spare builder may hold it shared.
		b.stopOnce.Do(func() { close(b.stopSpares) })
		<-b.sparesDone
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return nil
	}
	b.closed.Store(true)
	start := time.Now()
	if err := Cleanup(ctx, b.dir); err != nil {
		return fmt.Errorf("close builder: %w", err)
	}
	b.cfg.log.Info().Str("dir", b.dir).Dur("dur", time.Since(start)).Msg("root builder closed")
	return nil
}

// Cleanup removes a work directory left by a process that died holding
// roots: it lazily detaches every mount at or under dir (as listed in
// /proc/self/mountinfo, shallowest first, so one detach takes a whole tree),
// checks that none is left, then removes dir, never deleting through a
// mount. It is idempotent; a missing dir is not an error.
//
// It must not be called on a directory a live Builder is using.
func Cleanup(ctx context.Context, dir string) error {
	d, err := workDirPath(dir)
	if err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	if d, err = filepath.EvalSymlinks(d); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("clean up: %w", err)
	}
	const rounds = 16
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("clean up %s: %w", d, err)
		}
		mps, err := mountsUnder(d)
		if err != nil {
			return fmt.Errorf("clean up %s: %w", d, err)
		}
		if len(mps) == 0 {
			break
		}
		if i == rounds {
			return fmt.Errorf("clean up %s: still mounted after %d rounds: %s", d, rounds, strings.Join(mps, " "))
		}
		sort.SliceStable(mps, func(i, j int) bool {
			return strings.Count(mps[i], "/") < strings.Count(mps[j], "/")
		})
		var errs []error
		for _, mp := range mps {
			// EINVAL and ENOENT: already gone with a parent.
			err := unmount(mp, unix.MNT_DETACH)
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("clean up %s: %w", d, errors.Join(errs...))
		}
	}
	if err := removeTree(unix.AT_FDCWD, d, d, 0); err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	return nil
}
