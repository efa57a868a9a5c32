package invoker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/internal/statedir"
	"github.com/sockfaas/sockfaas/netns"
	"github.com/sockfaas/sockfaas/zygote"
)

// The registry's errors, checked with errors.Is; messages add context.
var (
	// ErrNotFound: no function of that name (or version).
	ErrNotFound = errors.New("function not found")
	// ErrInvalid: bad input, a name, a manifest, code or a requirement
	// that is not installed (which also matches zygote.ErrMissingRequirement).
	ErrInvalid = errors.New("invalid argument")
	// ErrTooLarge: an upload or code over a size or file-count limit.
	ErrTooLarge = errors.New("too large")
	// ErrClosed: the registry was closed.
	ErrClosed = errors.New("registry closed")
	// ErrBusy: another live process owns the registry's directory.
	ErrBusy = errors.New("registry directory in use")
)

// Defaults of the registry's options, after AWS Lambda's limits where it
// has one.
const (
	DefaultKeepVersions = 2
	DefaultMaxFiles     = 10000
	DefaultMaxCodeBytes = 250 << 20
)

// Function is one deployed version of a function. Functions handed out by
// a Registry are copies: changing one changes nothing in the registry.
type Function struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	// Dir is the registry's read-only copy of the code, what sandboxes
	// bind. It stays valid until the version is pruned or removed.
	Dir string `json:"dir"`
	// Manifest has its defaults filled in, and its Requirements include
	// those of requirements.txt.
	Manifest Manifest `json:"manifest"`
	// Imports are the top-level import names of the requirements'
	// distributions (Pillow → PIL), sorted: what a zygote pre-imports.
	Imports []string  `json:"imports,omitempty"`
	Created time.Time `json:"created"`
	// Digest identifies the code: "sha256:" and the hex SHA-256 of every
	// entry in lexical order, each as its kind, path, executable bit, size
	// and content (a symlink: its target). Times, owners and the kind of
	// source do not count: the same files give the same digest from a
	// directory and from an archive.
	Digest string `json:"digest"`
}

func (f *Function) clone() *Function {
	c := *f
	c.Manifest = f.Manifest.clone()
	c.Imports = slices.Clone(f.Imports)
	return &c
}

// Resolver finds the installed distributions behind requirements, as
// zygote.Resolve does, which the default Resolver runs. A requirement that
// is not met must be reported with a *zygote.MissingRequirementsError.
type Resolver func(ctx context.Context, reqs []zygote.Requirement) (map[string]zygote.Resolution, error)

// RegistryOption configures a Registry. (The names leave Option and
// WithLogger to the invoker that will own a registry.)
type RegistryOption func(*registryConfig)

type registryConfig struct {
	keep     int
	maxFiles int
	maxBytes int64
	resolver Resolver
	python   string
	pkgDirs  []string
	log      zerolog.Logger
	// hostNet allows manifests with network: host, which skips every
	// rule package netns installs (host loopback, metadata addresses).
	hostNet bool
}

// WithHostNetwork allows functions whose manifest asks for the host's
// network stack (network: host). Off by default: such a function reaches
// the host's loopback services, its abstract Unix sockets and the cloud
// metadata address, so only an operator should turn it on.
func WithHostNetwork(allowed bool) RegistryOption {
	return func(c *registryConfig) { c.hostNet = allowed }
}

// WithKeepVersions sets how many versions are kept besides the newest
// (default DefaultKeepVersions): older ones are removed when a deploy adds
// a version. In-flight instances bound to a removed version keep running:
// their mounts hold the files.
func WithKeepVersions(n int) RegistryOption { return func(c *registryConfig) { c.keep = n } }

// WithMaxFiles bounds the number of files and directories of a function's
// code (default DefaultMaxFiles).
func WithMaxFiles(n int) RegistryOption { return func(c *registryConfig) { c.maxFiles = n } }

// WithMaxCodeBytes bounds the unpacked size of a function's code, the sum
// of its file sizes (default DefaultMaxCodeBytes, AWS Lambda's limit).
func WithMaxCodeBytes(n int64) RegistryOption { return func(c *registryConfig) { c.maxBytes = n } }

// WithResolver replaces the requirement resolver, e.g. in tests that run
// without Python. The default runs zygote.Resolve with the runtime written
// under the registry's directory.
func WithResolver(r Resolver) RegistryOption { return func(c *registryConfig) { c.resolver = r } }

// WithResolverPython sets the interpreter of the default resolver ("": /usr/bin/python3).
func WithResolverPython(path string) RegistryOption {
	return func(c *registryConfig) { c.python = path }
}

// WithResolverPackageDirs sets directories the default resolver searches for
// distributions before Python's own path, the same the zygotes are given.
func WithResolverPackageDirs(dirs ...string) RegistryOption {
	return func(c *registryConfig) { c.pkgDirs = slices.Clone(dirs) }
}

// WithRegistryLogger injects the logger; the default discards.
func WithRegistryLogger(l zerolog.Logger) RegistryOption {
	return func(c *registryConfig) { c.log = l }
}

// Layout of the registry's directory.
const (
	functionsDir = "functions" // functions/<name>/<version>/{code/,function.json}
	tmpDir       = "tmp"       // staging and removal; emptied on open
	runtimeDir   = "runtime"   // zygote.WriteRuntime, for the default resolver
	codeDir      = "code"
	recordName   = "function.json"
	recordFormat = 1
)

// record is function.json. Dir is not stored: it follows the directory.
type record struct {
	Format   int       `json:"format"`
	Name     string    `json:"name"`
	Version  int       `json:"version"`
	Manifest Manifest  `json:"manifest"`
	Imports  []string  `json:"imports,omitempty"`
	Created  time.Time `json:"created"`
	Digest   string    `json:"digest"`
}

// Registry keeps deployed functions in a directory it owns, so that they
// survive a restart. Its methods are safe for concurrent use. Deploys run
// in parallel, also for the same name; only their last step, which gives
// the version number and makes it visible, is serialized.
//
// Invariants: a version on disk is complete (it appears by one rename of a
// fully written and synced directory); what Get and List return is on disk;
// a failed Deploy or Remove changes nothing.
//
// One process owns the directory at a time (an flock; ErrBusy otherwise),
// because opening it removes what an interrupted deploy left behind.
type Registry struct {
	dir  string
	cfg  registryConfig
	lock *os.File

	mu     sync.RWMutex
	funcs  map[string][]*Function // by name, oldest version first
	closed bool
	ops    sync.WaitGroup // Deploys and Removes in progress
}

var nameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$`)

// ValidateName checks a function name: 1 to 64 ASCII letters, digits, '-'
// and '_', starting with a letter or digit (AWS Lambda's names without the
// colon and ARN forms).
func ValidateName(name string) error {
	if !nameRe.MatchString(name) {
		return fmt.Errorf("%w: function name %q: want 1-64 letters, digits, - and _, starting with a letter or digit", ErrInvalid, name)
	}
	return nil
}

// OpenRegistry opens the registry in dir, creating it if needed, and loads
// every function in it. It removes what a deploy or removal interrupted by
// a crash left behind, and logs it; a version whose metadata cannot be read
// is logged and skipped, not removed.
func OpenRegistry(ctx context.Context, dir string, opts ...RegistryOption) (*Registry, error) {
	cfg := registryConfig{
		keep:     DefaultKeepVersions,
		maxFiles: DefaultMaxFiles,
		maxBytes: DefaultMaxCodeBytes,
		log:      zerolog.Nop(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.keep < 0:
		return nil, fmt.Errorf("open registry: %w: keep versions %d < 0", ErrInvalid, cfg.keep)
	case cfg.maxFiles < 1:
		return nil, fmt.Errorf("open registry: %w: max files %d < 1", ErrInvalid, cfg.maxFiles)
	case cfg.maxBytes < 1:
		return nil, fmt.Errorf("open registry: %w: max code bytes %d < 1", ErrInvalid, cfg.maxBytes)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	lock, err := statedir.Lock(dir)
	if errors.Is(err, statedir.ErrLocked) {
		return nil, fmt.Errorf("open registry %s: %w", dir, ErrBusy)
	}
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	r := &Registry{dir: dir, cfg: cfg, lock: lock, funcs: map[string][]*Function{}}
	if err := r.open(ctx); err != nil {
		statedir.Unlock(lock)
		return nil, fmt.Errorf("open registry %s: %w", dir, err)
	}
	return r, nil
}

func (r *Registry) open(ctx context.Context) error {
	for _, d := range []string{functionsDir, tmpDir} {
		if err := os.Mkdir(r.path(d), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	leftovers, err := os.ReadDir(r.path(tmpDir))
	if err != nil {
		return err
	}
	for _, e := range leftovers {
		p := r.path(tmpDir, e.Name())
		r.cfg.log.Warn().Str("path", p).Msg("removing what an interrupted deploy or removal left")
		if err := removeTree(p); err != nil {
			return err
		}
	}
	if r.cfg.resolver == nil {
		rt := r.path(runtimeDir)
		if err := zygote.WriteRuntime(rt); err != nil {
			return err
		}
		python, pkgDirs := r.cfg.python, r.cfg.pkgDirs
		r.cfg.resolver = func(ctx context.Context, reqs []zygote.Requirement) (map[string]zygote.Resolution, error) {
			return zygote.Resolve(ctx, python, rt, pkgDirs, reqs)
		}
	}
	return r.load(ctx)
}

// load reads functions/ into r.funcs.
func (r *Registry) load(ctx context.Context) error {
	names, err := os.ReadDir(r.path(functionsDir))
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := n.Name()
		log := r.cfg.log.With().Str("func", name).Logger()
		if !n.IsDir() || ValidateName(name) != nil {
			log.Warn().Str("path", r.path(functionsDir, name)).Msg("skipping a stray entry in the registry")
			continue
		}
		versions, err := os.ReadDir(r.path(functionsDir, name))
		if err != nil {
			return err
		}
		if len(versions) == 0 {
			// A deploy stopped between making the name's directory and
			// moving its first version in.
			log.Info().Msg("removing an empty function directory")
			if err := os.Remove(r.path(functionsDir, name)); err != nil {
				return err
			}
			continue
		}
		for _, v := range versions {
			fn, err := r.loadVersion(name, v.Name())
			if err != nil {
				log.Error().Err(err).Str("version", v.Name()).Msg("skipping an unreadable function version")
				continue
			}
			r.funcs[name] = append(r.funcs[name], fn)
		}
		slices.SortFunc(r.funcs[name], func(a, b *Function) int { return a.Version - b.Version })
		if fns := r.funcs[name]; len(fns) > 0 {
			log.Debug().Int("version", fns[len(fns)-1].Version).Msg("function loaded")
		}
	}
	return nil
}

func (r *Registry) loadVersion(name, entry string) (*Function, error) {
	version, err := strconv.Atoi(entry)
	if err != nil || version < 1 || strconv.Itoa(version) != entry {
		return nil, errors.New("not a version directory")
	}
	dir := r.path(functionsDir, name, entry)
	data, err := os.ReadFile(filepath.Join(dir, recordName))
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", recordName, err)
	}
	switch {
	case rec.Format != recordFormat:
		return nil, fmt.Errorf("%s: format %d, want %d", recordName, rec.Format, recordFormat)
	case rec.Name != name || rec.Version != version:
		return nil, fmt.Errorf("%s: names %s version %d", recordName, rec.Name, rec.Version)
	}
	if fi, err := os.Lstat(filepath.Join(dir, codeDir)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("code directory missing")
	}
	return &Function{
		Name: name, Version: version, Dir: filepath.Join(dir, codeDir),
		Manifest: rec.Manifest, Imports: rec.Imports, Created: rec.Created, Digest: rec.Digest,
	}, nil
}

func (r *Registry) path(elem ...string) string {
	return filepath.Join(append([]string{r.dir}, elem...)...)
}

// Dir is the registry's directory.
func (r *Registry) Dir() string { return r.dir }

// begin registers an operation that Close waits for.
func (r *Registry) begin() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.ops.Add(1)
	return nil
}

// Deploy adds a version of the function name with the code from src: the
// first version (1) of a new name, the next one of an existing name. Old
// versions beyond WithKeepVersions are removed.
//
// Deploy copies the code into the registry (later changes to a source
// directory do not reach the deployed version), makes it read-only (files
// 0444, or 0555 when executable, directories 0555, owned by root when the
// registry runs as root) and checks, in order: the source (see FromDir and
// FromArchive) and the registry's limits, the manifest (Manifest.Validate),
// that the handler's module exists and seems to define the function (see
// below), and that every
// requirement is installed. Anything wrong is an error wrapping ErrInvalid
// or ErrTooLarge, and leaves the registry as it was; requirements that are
// not installed are all listed, in an error that also matches
// zygote.ErrMissingRequirement and unwraps to *zygote.MissingRequirementsError.
//
// The handler check is a text scan: the module file must exist (mod.py or
// mod/__init__.py) and contain a def, class, top-level assignment or
// import of the function's name. It catches typos, not every mistake; the
// runtime makes the real check when an instance first starts.
func (r *Registry) Deploy(ctx context.Context, name string, src Source) (*Function, error) {
	fn, err := r.deploy(ctx, name, src)
	if err != nil {
		return nil, fmt.Errorf("deploy %q: %w", name, err)
	}
	return fn, nil
}

func (r *Registry) deploy(ctx context.Context, name string, src Source) (*Function, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if src == nil {
		return nil, fmt.Errorf("%w: no source", ErrInvalid)
	}
	if err := r.begin(); err != nil {
		return nil, err
	}
	defer r.ops.Done()
	start := time.Now()

	stage, err := os.MkdirTemp(r.path(tmpDir), "deploy-")
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			if err := removeTree(stage); err != nil {
				r.cfg.log.Error().Err(err).Str("path", stage).Msg("removing a failed deploy's staging directory")
			}
		}
	}()
	if err := os.Mkdir(filepath.Join(stage, codeDir), 0o755); err != nil {
		return nil, err
	}
	code, err := os.OpenRoot(filepath.Join(stage, codeDir))
	if err != nil {
		return nil, err
	}
	defer code.Close()

	lim := limits{maxFiles: r.cfg.maxFiles, maxBytes: r.cfg.maxBytes}
	if err := src.stage(ctx, code, lim); err != nil {
		return nil, fmt.Errorf("copy from %s: %w", src, err)
	}
	lm, err := loadManifest(code)
	if err != nil {
		return nil, err
	}
	if lm.manifest.Network == netns.ModeHost && !r.cfg.hostNet {
		return nil, fmt.Errorf("%w: network: host is not allowed on this invoker (the operator can allow it: sockfaas run --allow-host-network)", ErrInvalid)
	}
	imports, err := r.resolve(ctx, lm)
	if err != nil {
		return nil, err
	}
	digest, err := seal(ctx, code)
	if err != nil {
		return nil, err
	}
	fn := &Function{Name: name, Manifest: lm.manifest, Imports: imports, Digest: digest}
	pruned, err := r.commit(stage, fn)
	if err != nil {
		return nil, err
	}
	committed = true
	for _, p := range pruned {
		if err := removeTree(p); err != nil {
			r.cfg.log.Error().Err(err).Str("path", p).Msg("removing an old version")
		}
	}
	r.cfg.log.Info().Str("func", name).Int("version", fn.Version).Str("digest", digest).
		Dur("dur", time.Since(start)).Msg("function deployed")
	return fn.clone(), nil
}

// resolve checks that the requirements are installed and returns their
// import names.
func (r *Registry) resolve(ctx context.Context, lm loadedManifest) ([]string, error) {
	if len(lm.reqs) == 0 {
		return nil, nil
	}
	res, err := r.cfg.resolver(ctx, lm.reqs)
	var missing *zygote.MissingRequirementsError
	if errors.As(err, &missing) {
		return nil, &requirementsError{missing: missing, reqs: lm.reqs, origins: lm.origins}
	}
	if err != nil {
		return nil, err
	}
	var imports []string
	for _, res := range res {
		imports = append(imports, res.Imports...)
	}
	slices.Sort(imports)
	return slices.Compact(imports), nil
}

// requirementsError lists the requirements that are not installed with
// where each was written.
type requirementsError struct {
	missing *zygote.MissingRequirementsError
	reqs    []zygote.Requirement
	origins []string
}

func (e *requirementsError) Error() string {
	parts := make([]string, len(e.missing.Missing))
	for i, m := range e.missing.Missing {
		origin := ""
		if j := slices.IndexFunc(e.reqs, func(r zygote.Requirement) bool { return r.Name == m.Requirement.Name }); j >= 0 {
			origin = " (" + e.origins[j] + ")"
		}
		parts[i] = fmt.Sprintf("%s%s: %s", m.Requirement, origin, m.Reason)
	}
	return fmt.Sprintf("%s: %s", zygote.ErrMissingRequirement, strings.Join(parts, "; "))
}

func (e *requirementsError) Unwrap() []error { return []error{ErrInvalid, e.missing} }

// commit gives the staged function its version and moves it into place:
// the one step that makes it visible, on disk and in memory at once. It
// returns old versions to remove, already moved out of the way.
func (r *Registry) commit(stage string, fn *Function) (pruned []string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	nameDir := r.path(functionsDir, fn.Name)
	version, err := nextVersion(nameDir)
	if err != nil {
		return nil, err
	}
	if fns := r.funcs[fn.Name]; len(fns) > 0 {
		version = max(version, fns[len(fns)-1].Version+1)
	}
	fn.Version = version
	fn.Created = time.Now().UTC().Round(0)
	fn.Dir = filepath.Join(nameDir, strconv.Itoa(version), codeDir)
	if err := writeRecord(filepath.Join(stage, recordName), fn); err != nil {
		return nil, err
	}
	if err := syncDir(stage); err != nil {
		return nil, err
	}
	made := false
	if err := os.Mkdir(nameDir, 0o700); err == nil {
		made = true
		if err := syncDir(r.path(functionsDir)); err != nil {
			os.Remove(nameDir)
			return nil, err
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	if err := os.Rename(stage, filepath.Join(nameDir, strconv.Itoa(version))); err != nil {
		if made {
			os.Remove(nameDir)
		}
		return nil, err
	}
	// From here on the version exists: a failing sync is logged, not
	// undone (the rename may already be durable).
	if err := syncDir(nameDir); err != nil {
		r.cfg.log.Error().Err(err).Str("func", fn.Name).Msg("sync the function's directory")
	}
	fns := append(r.funcs[fn.Name], fn)
	for len(fns) > r.cfg.keep+1 {
		old := fns[0]
		to := r.path(tmpDir, fmt.Sprintf("prune-%s-%d-%s", old.Name, old.Version, randomSuffix()))
		if err := os.Rename(filepath.Dir(old.Dir), to); err != nil {
			r.cfg.log.Error().Err(err).Str("func", old.Name).Int("version", old.Version).Msg("removing an old version")
			break
		}
		pruned = append(pruned, to)
		fns = fns[1:]
	}
	r.funcs[fn.Name] = slices.Clip(fns)
	if len(pruned) > 0 {
		if err := syncDir(nameDir); err != nil {
			r.cfg.log.Error().Err(err).Str("func", fn.Name).Msg("sync the function's directory")
		}
	}
	return pruned, nil
}

// nextVersion is one more than the highest version directory in nameDir,
// also counting versions that could not be loaded, so a number is never
// reused while its directory exists.
func nextVersion(nameDir string) (int, error) {
	entries, err := os.ReadDir(nameDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	highest := 0
	for _, e := range entries {
		if v, err := strconv.Atoi(e.Name()); err == nil {
			highest = max(highest, v)
		}
	}
	return highest + 1, nil
}

func writeRecord(path string, fn *Function) error {
	data, err := json.MarshalIndent(record{
		Format: recordFormat, Name: fn.Name, Version: fn.Version, Manifest: fn.Manifest,
		Imports: fn.Imports, Created: fn.Created, Digest: fn.Digest,
	}, "", "  ")
	if err != nil {
		return err
	}
	// Environment values may be secrets: readable by the owner only.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(append(data, '\n')); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // never fails on Linux
	return hex.EncodeToString(b[:])
}

// removeTree removes a tree whose directories may be read-only (sealed
// code), which a non-root process cannot empty as they are.
func removeTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// Get returns the newest version of the function name.
func (r *Registry) Get(name string) (*Function, error) {
	fn, ok := r.current(name)
	if !ok {
		return nil, errNotFound(name)
	}
	return fn.clone(), nil
}

// errNotFound is Get's error for a name with no version.
func errNotFound(name string) error {
	return fmt.Errorf("function %q: %w", name, ErrNotFound)
}

// current returns name's newest version as stored, without the copy Get
// makes: for the invoker's own checks on the request path, which only read
// it. Callers must not modify it (versions are never changed once
// committed, so reading it without the lock is safe).
func (r *Registry) current(name string) (*Function, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	fns := r.funcs[name]
	if len(fns) == 0 {
		return nil, false
	}
	return fns[len(fns)-1], true
}

// GetVersion returns one version of the function name, if it is still
// kept.
func (r *Registry) GetVersion(name string, version int) (*Function, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, fn := range r.funcs[name] {
		if fn.Version == version {
			return fn.clone(), nil
		}
	}
	return nil, fmt.Errorf("function %q version %d: %w", name, version, ErrNotFound)
}

// Versions returns the kept versions of the function name, oldest first.
func (r *Registry) Versions(name string) ([]*Function, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	fns := r.funcs[name]
	if len(fns) == 0 {
		return nil, errNotFound(name)
	}
	out := make([]*Function, len(fns))
	for i, fn := range fns {
		out[i] = fn.clone()
	}
	return out, nil
}

// List returns the newest version of every function, by name.
func (r *Registry) List() []*Function {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Function, 0, len(r.funcs))
	for _, fns := range r.funcs {
		out = append(out, fns[len(fns)-1].clone())
	}
	slices.SortFunc(out, func(a, b *Function) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// names returns the names List would, in its order, without copying
// the functions.
func (r *Registry) names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.funcs))
	for name := range r.funcs {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// count is len(List()) without the copies.
func (r *Registry) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.funcs)
}

// Remove removes every version of the function name. A later Deploy of
// the name starts again at version 1, so whatever caches instances by name
// and version must drop the name's instances on Remove (or key on Digest
// and Created too).
func (r *Registry) Remove(ctx context.Context, name string) error {
	if err := r.remove(ctx, name); err != nil {
		return fmt.Errorf("remove %q: %w", name, err)
	}
	return nil
}

func (r *Registry) remove(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.begin(); err != nil {
		return err
	}
	defer r.ops.Done()
	r.mu.Lock()
	if _, ok := r.funcs[name]; !ok {
		r.mu.Unlock()
		return ErrNotFound
	}
	to := r.path(tmpDir, fmt.Sprintf("remove-%s-%s", name, randomSuffix()))
	if err := os.Rename(r.path(functionsDir, name), to); err != nil {
		r.mu.Unlock()
		return err
	}
	delete(r.funcs, name)
	err := syncDir(r.path(functionsDir))
	r.mu.Unlock()
	if err != nil {
		r.cfg.log.Error().Err(err).Str("func", name).Msg("sync the functions directory")
	}
	if err := removeTree(to); err != nil {
		r.cfg.log.Error().Err(err).Str("path", to).Msg("removing a removed function's files")
	}
	r.cfg.log.Info().Str("func", name).Msg("function removed")
	return nil
}

// Close waits for deploys and removals in progress, then releases the
// directory. Deploy and Remove fail with ErrClosed afterwards; Get and
// List keep answering from memory.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.ops.Wait()
	statedir.Unlock(r.lock)
	return nil
}
