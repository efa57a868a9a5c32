package libct

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

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/sandbox"
)

// rootPlan is a sandbox root translated from an fsbind.Spec: what to create
// in the (initially empty) rootfs directory on the host before
// libcontainer.Create, and the mounts libcontainer performs inside the
// container's mount namespace. Planning only reads the host; nothing is
// written until create.
type rootPlan struct {
	dir    string            // the rootfs directory on the host
	etc    string            // the backend's generated /etc, or "" with a rootfs base
	links  map[string]string // top-level symlinks to recreate: name -> target
	points []mountPoint      // mount points to create in dir
	mounts []*configs.Mount
	// view maps sandbox paths to host paths, longest dest wins; src "" marks
	// a file system the host cannot see (tmpfs, proc).
	view []viewEntry
}

type mountPoint struct {
	host string // absolute host path, in dir or etc
	file bool   // a file (for a file bind), else a directory
}

type viewEntry struct{ dest, src string }

const (
	bindFlags = unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV
	roBind    = bindFlags | unix.MS_RDONLY
)

// hostBase lists the host's top-level entries that make up the default base,
// besides the generated /etc: /usr, /bin, /sbin and every /lib*.
func hostBase() ([]string, error) {
	ents, err := os.ReadDir("/")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if n == "usr" || n == "bin" || n == "sbin" || strings.HasPrefix(n, "lib") {
			names = append(names, n)
		}
	}
	return names, nil
}

// planRoot translates spec. etcDir is the backend's generated /etc (used
// with the host base); scratch is the sandbox's scratch directory.
func planRoot(spec fsbind.Spec, dir, etcDir, scratch string) (*rootPlan, error) {
	p := &rootPlan{dir: dir, links: map[string]string{}, view: []viewEntry{{"/", dir}}}
	if spec.Base == "" {
		p.etc = etcDir
	}

	base, names := spec.Base, []string(nil)
	if base == "" {
		base = "/"
		var err error
		if names, err = hostBase(); err != nil {
			return nil, fmt.Errorf("list host base: %w", err)
		}
	} else {
		ents, err := os.ReadDir(base)
		if err != nil {
			return nil, invalid("read base %q: %v", base, err)
		}
		for _, e := range ents {
			names = append(names, e.Name())
		}
	}
	for _, n := range names {
		dest := "/" + n
		if isReserved(dest) {
			continue // the root provides its own
		}
		src := filepath.Join(base, n)
		fi, err := os.Lstat(src)
		if err != nil {
			return nil, fmt.Errorf("base entry %s: %w", src, err)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err != nil {
				return nil, fmt.Errorf("base entry %s: %w", src, err)
			}
			p.links[n] = target
		case fi.IsDir(), fi.Mode().IsRegular():
			p.addBind(src, dest, fi.Mode().IsRegular(), roBind)
		}
	}
	if spec.Base == "" {
		p.addBind(etcDir, "/etc", false, roBind)
	}

	tmpSize := spec.TmpSize
	if tmpSize == 0 {
		tmpSize = fsbind.DefaultTmpSize
	}
	for _, m := range []*configs.Mount{
		{Source: "proc", Destination: "/proc", Device: "proc", Flags: unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV},
		{Source: "tmpfs", Destination: "/dev", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_STRICTATIME, Data: "mode=755,size=65536k"},
		{Source: "devpts", Destination: "/dev/pts", Device: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620"},
		{Source: "shm", Destination: "/dev/shm", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, Data: "mode=1777,size=65536k"},
		{Source: "mqueue", Destination: "/dev/mqueue", Device: "mqueue", Flags: unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV},
		{Source: "tmpfs", Destination: "/tmp", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777,size=" + strconv.FormatInt(tmpSize, 10)},
	} {
		p.mounts = append(p.mounts, m)
		p.view = append(p.view, viewEntry{dest: m.Destination})
		if path.Dir(m.Destination) == "/" {
			p.points = append(p.points, mountPoint{host: filepath.Join(dir, m.Destination)})
		}
	}
	p.addBind(scratch, fsbind.ScratchDir, false, bindFlags)

	// Parents before children: a parent's path is a prefix of its
	// children's, so it sorts first.
	binds := append([]fsbind.Bind(nil), spec.Binds...)
	sort.Slice(binds, func(i, j int) bool { return path.Clean(binds[i].Dest) < path.Clean(binds[j].Dest) })
	for _, b := range binds {
		if err := p.planBind(b); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func isReserved(dest string) bool {
	switch dest {
	case "/proc", "/dev", "/tmp", fsbind.ScratchDir:
		return true
	}
	return false
}

// addBind adds a bind whose mount point lies directly in the rootfs dir.
func (p *rootPlan) addBind(src, dest string, file bool, flags int) {
	p.mounts = append(p.mounts, &configs.Mount{Source: src, Destination: dest, Device: "bind", Flags: flags})
	p.view = append(p.view, viewEntry{dest: dest, src: src})
	p.points = append(p.points, mountPoint{host: filepath.Join(p.dir, dest), file: file})
}

// planBind checks one of the spec's binds against the root planned so far:
// its source exists, the way to its destination crosses no symlink, and its
// mount point either already exists in whatever covers it or can be created
// in a directory the backend owns (the rootfs dir or the generated /etc),
// never in a base or bind source.
func (p *rootPlan) planBind(b fsbind.Bind) error {
	dest := path.Clean(b.Dest)
	sfi, err := os.Stat(b.Source)
	if err != nil {
		return invalid("bind source %q: %v", b.Source, err)
	}
	file := !sfi.IsDir()
	parts := strings.Split(dest[1:], "/")
	for i := range parts {
		sub := "/" + strings.Join(parts[:i+1], "/")
		cover, host := p.hostPath(sub)
		if host == "" {
			return invalid("bind destination %q lies in a file system the root creates itself", b.Dest)
		}
		if _, ok := p.links[sub[1:]]; ok && cover.src == p.dir {
			return invalid("bind destination %q crosses the symlink %s", b.Dest, sub)
		}
		fi, err := os.Lstat(host)
		last := i == len(parts)-1
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if cover.src != p.dir && cover.src != p.etc {
				return invalid("bind destination %q: %s does not exist in %s, and sockfaas never writes into a bind source", b.Dest, sub, cover.src)
			}
			p.points = append(p.points, mountPoint{host: host, file: last && file})
		case err != nil:
			return invalid("bind destination %q: %v", b.Dest, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return invalid("bind destination %q crosses the symlink %s", b.Dest, sub)
		case !last && !fi.IsDir():
			return invalid("bind destination %q: %s is not a directory", b.Dest, sub)
		case last && fi.IsDir() == file:
			return invalid("bind destination %q: source and mount point differ in type", b.Dest)
		}
	}
	flags := roBind
	if b.Writable {
		flags = bindFlags
	}
	p.mounts = append(p.mounts, &configs.Mount{Source: b.Source, Destination: dest, Device: "bind", Flags: flags})
	p.view = append(p.view, viewEntry{dest: dest, src: b.Source})
	return nil
}

// hostPath maps a clean absolute sandbox path to the host path it shows,
// through the mount covering it. host is "" when the host cannot see it.
func (p *rootPlan) hostPath(sp string) (cover viewEntry, host string) {
	for _, v := range p.view {
		if (v.dest == "/" || sp == v.dest || strings.HasPrefix(sp, v.dest+"/")) && len(v.dest) >= len(cover.dest) {
			cover = v
		}
	}
	if cover.src == "" {
		return cover, ""
	}
	if cover.dest == "/" {
		return cover, filepath.Join(cover.src, sp)
	}
	return cover, filepath.Join(cover.src, strings.TrimPrefix(sp, cover.dest))
}

// resolve follows sp inside the sandbox root as the sandbox would see it,
// symlinks included, and returns the host path it ends at; "" when it leaves
// what the host can see (/proc, /tmp, /dev) or loops.
func (p *rootPlan) resolve(sp string) string {
	for hops := 0; hops < 40; hops++ {
		parts := strings.Split(strings.TrimPrefix(path.Clean(sp), "/"), "/")
		cur := "/"
		restarted := false
		for i, part := range parts {
			if part == "" {
				continue
			}
			next := path.Join(cur, part)
			_, host := p.hostPath(next)
			if host == "" {
				return ""
			}
			fi, err := os.Lstat(host)
			if err != nil {
				return host // let the caller's stat report it
			}
			if fi.Mode()&fs.ModeSymlink != 0 {
				target, err := os.Readlink(host)
				if err != nil {
					return ""
				}
				if !path.IsAbs(target) {
					target = path.Join(cur, target)
				}
				sp = path.Join(append([]string{target}, parts[i+1:]...)...)
				restarted = true
				break
			}
			cur = next
		}
		if !restarted {
			_, host := p.hostPath(cur)
			return host
		}
	}
	return ""
}

// create makes the rootfs directory, its symlinks and mount points.
func (p *rootPlan) create() error {
	if err := os.Mkdir(p.dir, 0o755); err != nil {
		return err
	}
	for name, target := range p.links {
		if err := os.Symlink(target, filepath.Join(p.dir, name)); err != nil {
			return err
		}
	}
	for _, mp := range p.points {
		full := mp.host
		if !mp.file {
			if err := os.MkdirAll(full, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(full, os.O_CREATE|os.O_WRONLY|unix.O_NOFOLLOW, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w: %w", fmt.Sprintf(format, args...), sandbox.ErrInvalid, fsbind.ErrInvalid)
}

// writeEtc generates the minimal /etc shared by the backend's sandboxes that
// use the host base: just enough for libc to resolve users, groups and names.
func writeEtc(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"group":         "root:x:0:\nnogroup:x:65534:\n",
		"hosts":         "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
	}
	for _, n := range []string{"ld.so.cache", "resolv.conf"} {
		b, err := os.ReadFile(filepath.Join("/etc", n))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return err
		}
		files[n] = string(b)
	}
	for n, content := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}
