package peers

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sockfaas/sockfaas/internal/fsutil"
)

// ociVersion is written into config.json. Both runtimes here predate the
// spec module's version (crun 1.8.1 reports 1.0.0, runc 1.1 reports 1.0.2);
// every field used is from 1.0.
const ociVersion = "1.0.2"

// Container identity: the host's nobody, which the generated /etc names.
const (
	containerUID = 65534
	containerGID = 65534
)

// BundleOptions configures NewBundle.
type BundleOptions struct {
	// CgroupParent is the absolute cgroup path every container of the
	// bundle is put under, as CgroupParent/<container id>, in every
	// hierarchy. It must belong to this bundle alone: Cleanup removes it,
	// killing whatever is still inside.
	CgroupParent string
	// Env is added to the containers' environment (KEY=value), after PATH
	// and HOME.
	Env []string
}

// Bundle is an OCI bundle the peer runtimes run commands in.
//
// Layout of Dir (which the Bundle owns entirely):
//
//	rootfs/        empty mount points and the merged-/usr symlinks; read-only in the container
//	etc/           passwd, group, hosts, nsswitch.conf, ld.so.cache; bound read-only at /etc
//	run/<n>/       config.json of one run at a time (args and cgroup path differ per run)
//	state/<rt>/    the runtime's --root
type Bundle struct {
	// Dir is the bundle directory.
	Dir string
	// CgroupParent is BundleOptions.CgroupParent.
	CgroupParent string

	// spec is the template every run's config.json is made from; it is
	// never modified after NewBundle, so runs may proceed concurrently.
	spec specs.Spec

	mu    sync.Mutex
	free  []string // run directories not in use
	slots int      // run directories made so far
}

// NewBundle creates the bundle directory dir (which must not exist; its
// parent is created) with its rootfs and /etc. On failure dir is removed.
func NewBundle(dir string, opts BundleOptions) (b *Bundle, err error) {
	if err := validCgroupParent(opts.CgroupParent); err != nil {
		return nil, fmt.Errorf("new bundle %s: %w", dir, err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("new bundle: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("new bundle: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("new bundle: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()

	rootfs := filepath.Join(dir, "rootfs")
	etc := filepath.Join(dir, "etc")
	// 0755: once the root is pivoted, nobody must be able to traverse /
	// and read /etc.
	for _, d := range []string{rootfs, etc, filepath.Join(dir, "run"), filepath.Join(dir, "state")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("new bundle: %w", err)
		}
	}
	mounts, err := layoutRootfs(rootfs)
	if err != nil {
		return nil, fmt.Errorf("new bundle %s: %w", dir, err)
	}
	if err := writeEtc(etc); err != nil {
		return nil, fmt.Errorf("new bundle %s: %w", dir, err)
	}
	b = &Bundle{Dir: dir, CgroupParent: opts.CgroupParent}
	b.spec = baseSpec(rootfs, etc, mounts, opts.Env)
	return b, nil
}

// layoutRootfs makes rootfs's mount points and mirrors the host's top-level
// library and binary directories: a merged-/usr host's symlinks
// (/bin -> usr/bin, ...) become the same symlinks; a directory that is not a
// symlink into /usr is bound read-only instead. It returns those extra binds.
func layoutRootfs(rootfs string) ([]specs.Mount, error) {
	for _, d := range []string{"usr", "etc", "proc", "dev", "tmp"} {
		if err := os.Mkdir(filepath.Join(rootfs, d), 0o755); err != nil {
			return nil, err
		}
	}
	// runc gives a tmpfs the mode of the directory it is mounted on,
	// whatever the mode= option says.
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o777|os.ModeSticky); err != nil {
		return nil, err
	}
	var binds []specs.Mount
	for _, name := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		host := "/" + name
		fi, err := os.Lstat(host)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(host)
			if err != nil {
				return nil, err
			}
			if t := strings.TrimPrefix(target, "/"); t == "usr" || strings.HasPrefix(t, "usr/") {
				if err := os.Symlink(target, filepath.Join(rootfs, name)); err != nil {
					return nil, err
				}
				continue
			}
		}
		if !fi.IsDir() && fi.Mode()&os.ModeSymlink == 0 {
			continue
		}
		if err := os.Mkdir(filepath.Join(rootfs, name), 0o755); err != nil {
			return nil, err
		}
		binds = append(binds, roBind(host, host))
	}
	return binds, nil
}

// writeEtc writes the few files a dynamically linked program and Python
// look for. The loader cache is copied so library lookups cost what they
// cost on the host, and the alternatives symlinks because Debian reaches
// some libraries through them (numpy's libblas.so.3 and liblapack.so.3:
// /usr/lib/<triplet>/libblas.so.3 -> /etc/alternatives/... -> /usr/lib/...).
func writeEtc(etc string) error {
	if err := fsutil.CopySymlinks("/etc/alternatives", filepath.Join(etc, "alternatives")); err != nil {
		return err
	}
	files := map[string]string{
		"passwd":        "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"group":         "root:x:0:\nnogroup:x:65534:\n",
		"hosts":         "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
		"hostname":      "sockfaas-peer\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	cache, err := os.ReadFile("/etc/ld.so.cache")
	if errors.Is(err, os.ErrNotExist) {
		return nil // the loader falls back to its default directories
	}
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(etc, "ld.so.cache"), cache, 0o644)
}

func roBind(src, dst string) specs.Mount {
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"bind", "ro", "nosuid", "nodev"}}
}

// baseSpec is the configuration every run shares; Process.Args and
// Linux.CgroupsPath are filled in per run.
func baseSpec(rootfs, etc string, extra []specs.Mount, env []string) specs.Spec {
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		// The runtime populates /dev with its default devices.
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=65536k"}},
		roBind("/usr", "/usr"),
		{Destination: "/etc", Type: "bind", Source: etc, Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}},
	}
	mounts = append(mounts, extra...)
	return specs.Spec{
		Version: ociVersion,
		Process: &specs.Process{
			User: specs.User{UID: containerUID, GID: containerGID},
			Env: append([]string{
				"PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
				"HOME=/tmp",
			}, env...),
			Cwd: "/",
			// Present but empty: both runtimes then clear every set,
			// the bounding set included.
			Capabilities:    &specs.LinuxCapabilities{},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: rootfs, Readonly: true},
		Hostname: "sockfaas-peer",
		Mounts:   mounts,
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				// A new network namespace: loopback only.
				{Type: specs.NetworkNamespace},
			},
		},
	}
}

// prepareRun gives run id a bundle directory of its own (a run/<n> slot,
// whose root.path points at the shared rootfs) holding its config.json, and
// returns it; finishRun gives it back.
//
// Slots are reused, and config.json is overwritten in place rather than
// created: creating and removing a directory and a file per run costs
// 0.1–0.5 ms on this machine's ext4 (/run is not a tmpfs here), and
// rewriting a file with O_TRUNC makes ext4 flush it on close; an in-place
// write is a few microseconds. That keeps the harness's share out of what
// BenchmarkRun attributes to the runtimes (BenchmarkRunConfig prices it).
func (b *Bundle) prepareRun(id string, args []string) (string, error) {
	spec := b.spec
	proc := *spec.Process
	proc.Args = args
	spec.Process = &proc
	linux := *spec.Linux
	linux.CgroupsPath = b.CgroupParent + "/" + id
	spec.Linux = &linux
	data, err := json.Marshal(&spec)
	if err != nil {
		return "", err
	}

	b.mu.Lock()
	var dir string
	if n := len(b.free); n > 0 {
		dir, b.free = b.free[n-1], b.free[:n-1]
	} else {
		dir = filepath.Join(b.Dir, "run", strconv.Itoa(b.slots))
		b.slots++
	}
	b.mu.Unlock()

	if err := writeInPlace(filepath.Join(dir, "config.json"), data); err != nil {
		return "", err
	}
	return dir, nil
}

// finishRun returns dir to the free slots. A slot whose container may still
// exist (its delete failed) is not reused.
func (b *Bundle) finishRun(dir string, reuse bool) {
	if !reuse {
		return
	}
	b.mu.Lock()
	b.free = append(b.free, dir)
	b.mu.Unlock()
}

// writeInPlace makes path hold exactly data, creating it (and its directory)
// on first use and overwriting it in place afterwards.
func writeInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	}
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = f.Truncate(int64(len(data)))
	}
	return errors.Join(err, f.Close())
}

// validCgroupParent insists on an absolute, clean path below the root:
// relative paths resolve against each controller's own cgroup (which differ
// on the hosts we run on), and Cleanup removes the whole parent.
func validCgroupParent(p string) error {
	if !strings.HasPrefix(p, "/") || p == "/" || filepath.Clean(p) != p {
		return fmt.Errorf("cgroup parent %q must be an absolute, clean path below /: %w", p, ErrInvalid)
	}
	return nil
}
