package fsbind

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A plan is what Build does to one root, worked out before anything on the
// system changes: the entries to create in the root's own tmpfs, then the
// mounts, in order. Every check that can fail with ErrInvalid happens while
// planning, so an invalid Spec leaves no trace.
type plan struct {
	nodes  []node
	mounts []mountOp
}

type nodeKind uint8

const (
	nodeDir nodeKind = iota + 1
	nodeFile
	nodeSymlink
)

// node is an entry in the root's own tmpfs: a directory, an empty file (a
// file mount point) or a symlink.
type node struct {
	rel    string // relative to the root, no leading slash
	kind   nodeKind
	target string // of a symlink
}

type mountKind uint8

const (
	// mountTemplate binds one of the Builder's templates, whose mount
	// already carries the wanted flags: one mount(2) call, no remount.
	mountTemplate mountKind = iota + 1
	mountTmpfs
	mountScratch // binds the root's own scratch directory
	mountBindRO  // a foreign source, made read-only (see attach)
	mountBindRW
)

type mountOp struct {
	kind  mountKind
	rel   string  // target, relative to the root
	src   string  // host source of a bind; also where planning looks inside it
	dir   bool    // the source is a directory
	flags uintptr // of a tmpfs
	data  string  // of a tmpfs
}

// names of a root's own entries, relative to it.
const (
	relDev     = "dev"
	relShm     = "dev/shm"
	relProc    = "proc"
	relTmp     = "tmp"
	relScratch = "scratch" // ScratchDir without its slash
)

// skippedBaseEntries are the top-level entries of a rootfs Base that are
// never bound: the root provides its own (or, for sys, none).
var skippedBaseEntries = map[string]bool{
	"proc": true, "dev": true, "tmp": true, "sys": true, relScratch: true,
}

func tmpfsData(mode string, size int64) string {
	return "mode=" + mode + ",size=" + strconv.FormatInt(size, 10)
}

// appendOwn adds the entries every root has whatever its base: /dev (the
// template) with a private /dev/shm, /proc, /tmp and /scratch.
func appendOwn(p *plan, devTemplate string, tmpSize int64) {
	p.nodes = append(p.nodes,
		node{rel: relDev, kind: nodeDir},
		node{rel: relProc, kind: nodeDir},
		node{rel: relTmp, kind: nodeDir},
		node{rel: relScratch, kind: nodeDir},
	)
	p.mounts = append(p.mounts,
		mountOp{kind: mountTemplate, rel: relDev, src: devTemplate, dir: true},
		mountOp{kind: mountTmpfs, rel: relShm, dir: true,
			flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, data: tmpfsData("1777", tmpSize)},
		mountOp{kind: mountTmpfs, rel: relTmp, dir: true,
			flags: unix.MS_NOSUID | unix.MS_NODEV, data: tmpfsData("1777", tmpSize)},
		mountOp{kind: mountScratch, rel: relScratch, dir: true},
	)
}

// plan works out how to build spec. The returned plan may share memory with
// the Builder's precomputed plans: never modify it in place.
func (b *Builder) plan(spec Spec) (plan, error) {
	tmpSize := spec.TmpSize
	if tmpSize == 0 {
		tmpSize = DefaultTmpSize
	}
	if spec.IsDefault() {
		return b.defaults, nil
	}
	var p plan
	if spec.Base == "" {
		n, m := len(b.hostBase.nodes), len(b.hostBase.mounts)
		p.nodes = append(make([]node, 0, n+4+len(spec.Binds)), b.hostBase.nodes...)
		p.mounts = append(make([]mountOp, 0, m+4+len(spec.Binds)), b.hostBase.mounts...)
	} else {
		var err error
		if p, err = planBase(filepath.Clean(spec.Base)); err != nil {
			return plan{}, err
		}
	}
	appendOwn(&p, b.devTemplate, tmpSize)

	// Parents before children, so that a bind inside another bind lands on
	// top of it; ties in name order, so that a plan is deterministic.
	binds := make([]Bind, len(spec.Binds), len(spec.Binds)+len(spec.MountPoints))
	copy(binds, spec.Binds)
	for _, mp := range spec.MountPoints {
		binds = append(binds, Bind{Source: b.emptyDir, Dest: mp})
	}
	for i := range binds {
		binds[i].Dest = path.Clean(binds[i].Dest)
	}
	sort.SliceStable(binds, func(i, j int) bool {
		di, dj := strings.Count(binds[i].Dest, "/"), strings.Count(binds[j].Dest, "/")
		if di != dj {
			return di < dj
		}
		return binds[i].Dest < binds[j].Dest
	})
	for _, bd := range binds {
		if err := p.addBind(bd); err != nil {
			return plan{}, err
		}
	}
	return p, nil
}

// planBase lists the top-level entries of a rootfs directory: symlinks are
// recreated, directories and regular files bound read-only, anything else
// (devices, sockets, fifos) left out.
func planBase(base string) (plan, error) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return plan{}, fmt.Errorf("base %q: %w: %w", base, err, ErrInvalid)
	}
	var p plan
	for _, e := range ents {
		name := e.Name()
		if skippedBaseEntries[name] {
			continue
		}
		src := filepath.Join(base, name)
		switch t := e.Type(); {
		case t&fs.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err != nil {
				return plan{}, fmt.Errorf("base %q: %w", base, err)
			}
			p.nodes = append(p.nodes, node{rel: name, kind: nodeSymlink, target: target})
		case t.IsDir():
			p.nodes = append(p.nodes, node{rel: name, kind: nodeDir})
			p.mounts = append(p.mounts, mountOp{kind: mountBindRO, rel: name, src: src, dir: true})
		case t.IsRegular():
			p.nodes = append(p.nodes, node{rel: name, kind: nodeFile})
			p.mounts = append(p.mounts, mountOp{kind: mountBindRO, rel: name, src: src})
		}
	}
	return p, nil
}

// addBind checks one extra bind against what the plan already holds and
// adds it, with any directories it needs in the root's tmpfs.
//
// Walking the destination one component at a time, each step is either in
// the root's own tmpfs (where missing directories are planned), or inside a
// mount already planned (base directory or earlier bind), where the entry
// must already exist in the bind's source: fsbind never writes there. A
// symlink anywhere on the way is refused rather than followed, as it would
// resolve against the host.
func (p *plan) addBind(bd Bind) error {
	st, err := os.Stat(bd.Source)
	if err != nil {
		return fmt.Errorf("bind source %q: %w: %w", bd.Source, err, ErrInvalid)
	}
	srcDir := st.IsDir()
	dest := bd.Dest // clean and absolute (Validate, plan)
	rel := dest[1:]
	within := -1 // index in p.mounts of the deepest mount on the way
	for i := 0; i <= len(rel); i++ {
		if i < len(rel) && rel[i] != '/' {
			continue
		}
		cur, last := rel[:i], i == len(rel)
		if j := p.mountAt(cur); j >= 0 {
			m := p.mounts[j]
			if !m.dir && !last {
				return invalidDest(dest, "/%s is a file", cur)
			}
			if last && m.dir != srcDir {
				return invalidDest(dest, "mount point and source %q differ in type", bd.Source)
			}
			within = j
			continue
		}
		if within >= 0 {
			m := p.mounts[within]
			host := filepath.Join(m.src, strings.TrimPrefix(cur, m.rel+"/"))
			fi, err := os.Lstat(host)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				return invalidDest(dest, "mount point /%s is missing from the bound /%s (fsbind never writes into a bind's source)", cur, m.rel)
			case err != nil:
				return fmt.Errorf("bind destination %q: %w", dest, err)
			case fi.Mode()&fs.ModeSymlink != 0:
				return invalidDest(dest, "escapes the root through a symlink at /%s", cur)
			case !last && !fi.IsDir():
				return invalidDest(dest, "/%s is not a directory", cur)
			case last && fi.IsDir() != srcDir:
				return invalidDest(dest, "mount point and source %q differ in type", bd.Source)
			}
			continue
		}
		if k := p.nodeAt(cur); k >= 0 {
			n := p.nodes[k]
			switch {
			case n.kind == nodeSymlink:
				return invalidDest(dest, "escapes the root through a symlink at /%s", cur)
			case !last && n.kind != nodeDir:
				return invalidDest(dest, "/%s is not a directory", cur)
			case last && (n.kind == nodeDir) != srcDir:
				return invalidDest(dest, "mount point and source %q differ in type", bd.Source)
			}
			continue
		}
		kind := nodeDir
		if last && !srcDir {
			kind = nodeFile
		}
		p.nodes = append(p.nodes, node{rel: cur, kind: kind})
	}
	kind := mountBindRO
	if bd.Writable {
		kind = mountBindRW
	}
	p.mounts = append(p.mounts, mountOp{kind: kind, rel: rel, src: bd.Source, dir: srcDir})
	return nil
}

func invalidDest(dest, format string, args ...any) error {
	return fmt.Errorf("bind destination %q: %s: %w", dest, fmt.Sprintf(format, args...), ErrInvalid)
}

// mountAt returns the index of the topmost planned mount at rel, or -1.
func (p *plan) mountAt(rel string) int {
	for i := len(p.mounts) - 1; i >= 0; i-- {
		if p.mounts[i].rel == rel {
			return i
		}
	}
	return -1
}

func (p *plan) nodeAt(rel string) int {
	for i := range p.nodes {
		if p.nodes[i].rel == rel {
			return i
		}
	}
	return -1
}
