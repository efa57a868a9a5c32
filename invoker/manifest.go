package invoker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sockfaas/sockfaas/netns"
	"github.com/sockfaas/sockfaas/zygote"
)

// ManifestNames are the file names Deploy reads a manifest from, at the top
// of a function's code. At most one of them may be present.
var ManifestNames = []string{"sockfaas.yaml", "function.yaml"}

// RequirementsName is the pip-style requirements file Deploy reads next to
// the manifest; its requirements are added to Manifest.Requirements.
const RequirementsName = "requirements.txt"

// Style says how a handler is called.
type Style string

const (
	// StyleLambda calls handler(event, context), as AWS Lambda's Python
	// runtime does.
	StyleLambda Style = "lambda"
	// StyleOpenLambda calls f(event), as OpenLambda does.
	StyleOpenLambda Style = "openlambda"
)

// RuntimePython3 is the only runtime: the host's /usr/bin/python3, which
// the zygotes run.
const RuntimePython3 = "python3"

// Defaults and bounds of a manifest, after AWS Lambda's where it has one.
const (
	DefaultHandler = "lambda_function.lambda_handler"
	// OpenLambdaHandler is the handler of OpenLambda's convention (f.py
	// defining f(event)); Deploy picks it when the manifest names no
	// handler, the code has f.py and no lambda_function.py.
	OpenLambdaHandler = "f.f"

	DefaultMemoryMB = 128
	MinMemoryMB     = 128
	MaxMemoryMB     = 10240

	DefaultTimeoutSec = 3
	MaxTimeoutSec     = 900

	// MinCPUMillis is the smallest CPU limit: cgroups accept no quota below
	// 1 ms per 100 ms period.
	MinCPUMillis = 10
	MaxCPUMillis = 1024 * 1000

	// MaxEnvironmentBytes bounds the sum of the lengths of the environment's
	// keys and values, like AWS Lambda's 4 KB.
	MaxEnvironmentBytes = 4096
)

// Manifest is a function's configuration, read from the optional YAML file
// sockfaas.yaml (or function.yaml) at the top of its code. Zero fields mean
// the default; WithDefaults fills them in. Every Function in a Registry
// carries its manifest with the defaults filled in.
//
//	handler: app.main              # module.function; default lambda_function.lambda_handler
//	runtime: python3               # the only runtime
//	style: lambda                  # lambda: f(event, context); openlambda: f(event)
//	requirements: [numpy>=1.20]    # merged with requirements.txt
//	memory_mb: 256                 # 128..10240, default 128
//	cpu_millis: 500                # 0 (default): no CPU limit
//	timeout_sec: 10                # 1..900, default 3
//	environment: {GREETING: hi}
//	max_concurrency: 4             # 0 (default): the invoker's default
//	network: shared                # none, shared (default), isolated or host
//	ports: [8080]                  # container ports to publish
type Manifest struct {
	// Handler is "module.function", the module a dotted path relative to
	// the code ("pkg.mod.handler" is def handler in pkg/mod.py or
	// pkg/mod/__init__.py). ASCII identifiers only.
	Handler string `yaml:"handler,omitempty" json:"handler,omitempty"`
	// Runtime must be RuntimePython3 (or empty).
	Runtime string `yaml:"runtime,omitempty" json:"runtime,omitempty"`
	// Style defaults to StyleOpenLambda for OpenLambdaHandler and to
	// StyleLambda for any other handler.
	Style Style `yaml:"style,omitempty" json:"style,omitempty"`
	// Requirements are requirements.txt lines naming installed
	// distributions (see zygote.ParseRequirements), one per entry. In a
	// deployed Function they include those of requirements.txt.
	Requirements []string `yaml:"requirements,omitempty" json:"requirements,omitempty"`
	// MemoryMB is the instance's memory limit.
	MemoryMB int `yaml:"memory_mb,omitempty" json:"memory_mb,omitempty"`
	// CPUMillis is the instance's CPU limit in thousandths of a CPU; 0 is
	// no limit.
	CPUMillis int `yaml:"cpu_millis,omitempty" json:"cpu_millis,omitempty"`
	// TimeoutSec bounds one invocation.
	TimeoutSec int `yaml:"timeout_sec,omitempty" json:"timeout_sec,omitempty"`
	// Environment is added to the instance's environment. Keys are
	// environment variable names; the prefixes AWS_ and SOCKFAAS_ and the
	// names the Lambda runtime sets itself are reserved.
	Environment map[string]string `yaml:"environment,omitempty" json:"environment,omitempty"`
	// MaxConcurrency caps the function's instances; 0 leaves it to the
	// invoker.
	MaxConcurrency int `yaml:"max_concurrency,omitempty" json:"max_concurrency,omitempty"`
	// Network is how instances reach the network (see package netns).
	Network netns.Mode `yaml:"network,omitempty" json:"network,omitempty"`
	// Ports are container ports published on the host; they need the
	// shared or isolated network.
	Ports []int `yaml:"ports,omitempty" json:"ports,omitempty"`
}

// Timeout is TimeoutSec as a duration (the default when unset).
func (m Manifest) Timeout() time.Duration {
	if m.TimeoutSec == 0 {
		return DefaultTimeoutSec * time.Second
	}
	return time.Duration(m.TimeoutSec) * time.Second
}

// WithDefaults returns m with its zero fields set to their defaults. It
// does not look at the code: Deploy first picks OpenLambdaHandler when the
// code calls for it.
func (m Manifest) WithDefaults() Manifest {
	if m.Handler == "" {
		m.Handler = DefaultHandler
	}
	if m.Runtime == "" {
		m.Runtime = RuntimePython3
	}
	if m.Style == "" {
		m.Style = StyleLambda
		if m.Handler == OpenLambdaHandler {
			m.Style = StyleOpenLambda
		}
	}
	if m.MemoryMB == 0 {
		m.MemoryMB = DefaultMemoryMB
	}
	if m.TimeoutSec == 0 {
		m.TimeoutSec = DefaultTimeoutSec
	}
	if m.Network == "" {
		m.Network = netns.ModeShared
	}
	return m
}

// ParseManifest decodes a manifest strictly: an unknown field, a value of
// the wrong type or a second YAML document is an error naming its line.
// It does not apply defaults or Validate.
func ParseManifest(data []byte) (Manifest, error) {
	var m Manifest
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil && !errors.Is(err, io.EOF) {
		return Manifest{}, fmt.Errorf("%w: %s", ErrInvalid, yamlMessage(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Manifest{}, fmt.Errorf("%w: more than one YAML document", ErrInvalid)
	}
	return m, nil
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// yamlMessage turns yaml.v3's messages into shorter ones that name the
// field as the user wrote it.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return strings.TrimPrefix(err.Error(), "yaml: ")
	}
	msgs := make([]string, len(te.Errors))
	for i, e := range te.Errors {
		msgs[i] = unknownField.ReplaceAllString(e, `unknown field "$1"`)
		msgs[i] = strings.ReplaceAll(msgs[i], "netns.Mode", "string")
		msgs[i] = strings.ReplaceAll(msgs[i], "invoker.Style", "string")
	}
	return strings.Join(msgs, "; ")
}

var (
	handlerRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$`)
	envKeyRe  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// reservedEnv are variables the runtimes set themselves (the AWS-style
// runtime sets these Lambda names).
var reservedEnv = []string{"_HANDLER", "_X_AMZN_TRACE_ID", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR"}

// Validate checks m as written (zero fields stand for their defaults) and
// reports every problem at once, wrapping ErrInvalid. It does not look at
// the code or at installed packages: Deploy does.
func (m Manifest) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	if m.Handler != "" && !handlerRe.MatchString(m.Handler) {
		bad("handler %q: want module.function with ASCII Python identifiers, e.g. %s", m.Handler, DefaultHandler)
	} else if m.Handler != "" && isPythonKeyword(m.Handler) {
		bad("handler %q: a part of it is a Python keyword", m.Handler)
	}
	if m.Runtime != "" && m.Runtime != RuntimePython3 {
		bad("runtime %q is not supported: the only runtime is %q (the host's python3)", m.Runtime, RuntimePython3)
	}
	switch m.Style {
	case "", StyleLambda, StyleOpenLambda:
	default:
		bad("style %q: want %q or %q", m.Style, StyleLambda, StyleOpenLambda)
	}
	for i, r := range m.Requirements {
		if strings.TrimSpace(r) == "" {
			bad("requirements[%d] is empty", i)
		}
	}
	if m.MemoryMB != 0 && (m.MemoryMB < MinMemoryMB || m.MemoryMB > MaxMemoryMB) {
		bad("memory_mb %d: want %d..%d", m.MemoryMB, MinMemoryMB, MaxMemoryMB)
	}
	if m.CPUMillis != 0 && (m.CPUMillis < MinCPUMillis || m.CPUMillis > MaxCPUMillis) {
		bad("cpu_millis %d: want 0 (no limit) or %d..%d", m.CPUMillis, MinCPUMillis, MaxCPUMillis)
	}
	if m.TimeoutSec != 0 && (m.TimeoutSec < 1 || m.TimeoutSec > MaxTimeoutSec) {
		bad("timeout_sec %d: want 1..%d", m.TimeoutSec, MaxTimeoutSec)
	}
	envBytes := 0
	for _, k := range slices.Sorted(maps.Keys(m.Environment)) {
		v := m.Environment[k]
		envBytes += len(k) + len(v)
		switch upper := strings.ToUpper(k); {
		case !envKeyRe.MatchString(k):
			bad("environment %q: want letters, digits and _, not starting with a digit", k)
		case strings.HasPrefix(upper, "AWS_"), strings.HasPrefix(upper, "SOCKFAAS_"), slices.Contains(reservedEnv, k):
			bad("environment %q is reserved (AWS_ and SOCKFAAS_ prefixes and %s are set by the runtime)", k, strings.Join(reservedEnv, ", "))
		}
		if strings.IndexByte(v, 0) >= 0 {
			bad("environment %q: the value holds a NUL byte", k)
		}
	}
	if envBytes > MaxEnvironmentBytes {
		bad("environment: %d bytes of keys and values, more than %d", envBytes, MaxEnvironmentBytes)
	}
	if m.MaxConcurrency < 0 {
		bad("max_concurrency %d: want 0 (the invoker's default) or more", m.MaxConcurrency)
	}
	mode, err := netns.ParseMode(string(m.Network))
	if err != nil {
		bad("network %q: want none, shared, isolated or host", m.Network)
	}
	seen := map[int]bool{}
	for _, p := range m.Ports {
		switch {
		case p < 1 || p > 65535:
			bad("ports: %d is not a port (1..65535)", p)
		case seen[p]:
			bad("ports: %d is listed twice", p)
		}
		seen[p] = true
	}
	if len(m.Ports) > 0 && (mode == netns.ModeNone || mode == netns.ModeHost) {
		bad("ports need network shared or isolated, not %s", mode)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}

// pythonKeywords cannot name a module or a function.
var pythonKeywords = []string{
	"False", "None", "True", "and", "as", "assert", "async", "await", "break",
	"class", "continue", "def", "del", "elif", "else", "except", "finally",
	"for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
	"not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
}

func isPythonKeyword(handler string) bool {
	for part := range strings.SplitSeq(handler, ".") {
		if slices.Contains(pythonKeywords, part) {
			return true
		}
	}
	return false
}

// clone copies m's slices and map, so that a Function handed out cannot
// change the registry's copy.
func (m Manifest) clone() Manifest {
	m.Requirements = slices.Clone(m.Requirements)
	m.Ports = slices.Clone(m.Ports)
	m.Environment = maps.Clone(m.Environment)
	return m
}

// maxConfigBytes bounds the manifest and requirements.txt, which are read
// whole.
const maxConfigBytes = 1 << 20

// loadedManifest is a function's manifest as read from its code, defaults
// filled in, with its requirements merged and parsed.
type loadedManifest struct {
	manifest Manifest
	reqs     []zygote.Requirement
	// origins[i] says where reqs[i] was written, for error messages.
	origins []string
}

// loadManifest reads the manifest and requirements.txt at the top of code,
// picks the handler when the manifest names none, fills in the defaults
// and validates the result, including the handler against the code.
func loadManifest(code *os.Root) (loadedManifest, error) {
	var m Manifest
	found := ""
	for _, name := range ManifestNames {
		data, err := readConfig(code, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return loadedManifest{}, err
		}
		if found != "" {
			return loadedManifest{}, fmt.Errorf("%w: both %s and %s are present: keep one", ErrInvalid, found, name)
		}
		found = name
		if m, err = ParseManifest(data); err != nil {
			return loadedManifest{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	if found == "" {
		found = "manifest"
	}
	if err := m.Validate(); err != nil {
		return loadedManifest{}, fmt.Errorf("%s: %w", found, err)
	}
	if m.Handler == "" && !isFile(code, "lambda_function.py") && isFile(code, "f.py") {
		m.Handler = OpenLambdaHandler
	}
	lm := loadedManifest{manifest: m.WithDefaults()}
	if err := lm.mergeRequirements(code, found); err != nil {
		return loadedManifest{}, err
	}
	if err := checkHandler(code, lm.manifest.Handler); err != nil {
		return loadedManifest{}, err
	}
	return lm, nil
}

// readConfig reads a small file of the code; fs.ErrNotExist when absent.
func readConfig(code *os.Root, name string) ([]byte, error) {
	f, err := code.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrInvalid, name)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalid, name, maxConfigBytes)
	}
	return data, nil
}

// mergeRequirements parses the manifest's requirements and requirements.txt
// into lm.reqs, refusing a distribution named twice (even with different
// markers: one line per distribution keeps the resolved set unambiguous).
func (lm *loadedManifest) mergeRequirements(code *os.Root, manifestName string) error {
	byName := map[string]string{}
	add := func(r zygote.Requirement, origin string) error {
		key := normalizeDist(r.Name)
		if prev, ok := byName[key]; ok {
			return fmt.Errorf("%w: requirement %q appears twice (%s and %s)", ErrInvalid, r.Name, prev, origin)
		}
		byName[key] = origin
		lm.reqs = append(lm.reqs, r)
		lm.origins = append(lm.origins, origin)
		return nil
	}
	for i, s := range lm.manifest.Requirements {
		origin := fmt.Sprintf("%s requirements[%d]", manifestName, i)
		rs, err := zygote.ParseRequirements(strings.NewReader(s))
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "requirements line 1: ")
			return fmt.Errorf("%w: %s: %s", ErrInvalid, origin, msg)
		}
		if len(rs) != 1 || strings.ContainsAny(s, "\r\n") {
			return fmt.Errorf("%w: %s %q: want one requirement per entry", ErrInvalid, origin, s)
		}
		if err := add(rs[0], origin); err != nil {
			return err
		}
	}
	data, err := readConfig(code, RequirementsName)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		rs, err := zygote.ParseRequirements(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalid, RequirementsName, err)
		}
		for _, r := range rs {
			if err := add(r, fmt.Sprintf("%s line %d", RequirementsName, r.Line)); err != nil {
				return err
			}
		}
	}
	lm.manifest.Requirements = nil
	for _, r := range lm.reqs {
		lm.manifest.Requirements = append(lm.manifest.Requirements, r.String())
	}
	return nil
}

var distSeparators = regexp.MustCompile(`[-_.]+`)

// normalizeDist is PEP 503's normalisation of distribution names.
func normalizeDist(name string) string {
	return distSeparators.ReplaceAllString(strings.ToLower(name), "-")
}

func isFile(code *os.Root, name string) bool {
	fi, err := code.Stat(name)
	return err == nil && fi.Mode().IsRegular()
}

// maxScanBytes bounds how much of a handler's module checkHandler reads.
const maxScanBytes = 8 << 20

// checkHandler checks that the handler's module is in the code and seems
// to define the function. The module must exist (mod.py, or mod/__init__.py
// for a package). The function is looked for with a text scan, a heuristic
// that errs on the side of accepting: a def or class of that name, a
// top-level assignment to it, or an import that binds it. Code that makes
// the name some other way (exec, globals()) is refused here even though it
// would run; code where the name only appears in a nested scope passes and
// fails at the first start, where the runtime makes the real check.
func checkHandler(code *os.Root, handler string) error {
	i := strings.LastIndexByte(handler, '.')
	module, fn := handler[:i], handler[i+1:]
	base := strings.ReplaceAll(module, ".", "/")
	candidates := []string{base + ".py", base + "/__init__.py"}
	file := ""
	for _, c := range candidates {
		if isFile(code, c) {
			file = c
			break
		}
	}
	if file == "" {
		hint := ""
		if py := topLevelPython(code); len(py) > 0 {
			hint = fmt.Sprintf(" (the code has %s; set handler in %s)", strings.Join(py, ", "), ManifestNames[0])
		}
		return fmt.Errorf("%w: handler %s: module file %s not found in the code%s", ErrInvalid, handler, candidates[0], hint)
	}
	f, err := code.Open(file)
	if err != nil {
		return fmt.Errorf("handler %s: %w", handler, err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxScanBytes))
	if err != nil {
		return fmt.Errorf("handler %s: %w", handler, err)
	}
	if !definesName(src, fn) {
		return fmt.Errorf("%w: handler %s: %s does not define %s (no \"def %s\" found)", ErrInvalid, handler, file, fn, fn)
	}
	return nil
}

// definesName is checkHandler's heuristic; name is an ASCII identifier.
func definesName(src []byte, name string) bool {
	n := regexp.QuoteMeta(name)
	re := regexp.MustCompile(`(?m)` +
		`^[ \t]*(?:async[ \t]+)?def[ \t]+` + n + `[ \t]*\(` + // def name(
		`|^[ \t]*class[ \t]+` + n + `\b` + // class name
		`|^` + n + `[ \t]*(?::[^=\n]*)?=[^=]` + // name = ..., name: T = ...
		`|^[ \t]*(?:from[ \t]+\S+[ \t]+)?import[ \t][^\n]*\b` + n + `\b` + // import ... name
		`|\bimport[ \t]*\([^)]*\b` + n + `\b`) // from m import (\n a,\n name)
	return re.Match(src)
}

// topLevelPython lists up to five .py files at the top of the code.
func topLevelPython(code *os.Root) []string {
	d, err := code.Open(".")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	slices.Sort(names)
	var py []string
	for _, n := range names {
		if strings.HasSuffix(n, ".py") && len(py) < 5 {
			py = append(py, n)
		}
	}
	return py
}
