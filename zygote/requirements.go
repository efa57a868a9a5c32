package zygote

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// defaultPython is the interpreter Resolve uses when the caller names none: Debian's,
// whose dist-packages is the default install cache.
const defaultPython = "/usr/bin/python3"

// ErrMissingRequirement is wrapped by Resolve's error when a requirement is
// not installed or its installed version does not satisfy the specifier.
// sockfaas installs nothing when a function runs, so the registry rejects
// such a function when it is deployed.
var ErrMissingRequirement = errors.New("requirement not installed")

// Requirement is one line of a requirements.txt.
type Requirement struct {
	// Name is the distribution name as written ("Pillow"), not normalised.
	Name string
	// Spec is everything after the name, trimmed: extras, version
	// specifiers, an environment marker ("[performance]>=2.0; python_version >= \"3.9\"").
	Spec string
	// Line is the 1-based line where the requirement starts.
	Line int
}

// String gives the requirement as it appeared (without options and comments).
func (r Requirement) String() string {
	if r.Spec == "" {
		return r.Name
	}
	if r.Spec[0] == ';' {
		return r.Name + " " + r.Spec
	}
	return r.Name + r.Spec
}

// Resolution is an installed distribution that satisfies a requirement.
type Resolution struct {
	Version string
	// Imports are its top-level import names (Pillow → PIL), what a zygote
	// imports to have the distribution ready.
	Imports []string
}

// MissingRequirement says why one requirement cannot be met.
type MissingRequirement struct {
	Requirement Requirement
	// Reason is "not installed" or "version X does not satisfy SPEC".
	Reason string
}

// MissingRequirementsError lists every requirement that cannot be met. It
// matches ErrMissingRequirement with errors.Is.
type MissingRequirementsError struct {
	Missing []MissingRequirement
}

func (e *MissingRequirementsError) Error() string {
	parts := make([]string, len(e.Missing))
	for i, m := range e.Missing {
		parts[i] = fmt.Sprintf("%s (line %d): %s", m.Requirement, m.Requirement.Line, m.Reason)
	}
	return ErrMissingRequirement.Error() + ": " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrMissingRequirement) hold.
func (e *MissingRequirementsError) Is(target error) bool { return target == ErrMissingRequirement }

// A distribution name as PEP 508 allows it.
var reqName = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?`)

// ParseRequirements reads a requirements.txt. Comments, blank lines and
// backslash continuations are handled as pip does; extras, version
// specifiers and markers stay in Spec for the resolver. Anything that would
// make pip fetch or build something (options such as -r, -e, --index-url,
// URLs, local paths) is an error naming the line: sockfaas installs nothing
// at run time. The one option accepted is a per-requirement --hash, which is
// dropped: it checks downloads, and nothing is downloaded.
func ParseRequirements(r io.Reader) ([]Requirement, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var (
		reqs      []Requirement
		logical   strings.Builder
		start     int
		lineNo    int
		continued bool // the previous line ended with a backslash
	)
	flush := func() error {
		line := logical.String()
		logical.Reset()
		req, ok, err := parseRequirementLine(line, start)
		if err != nil {
			return err
		}
		if ok {
			reqs = append(reqs, req)
		}
		return nil
	}
	for sc.Scan() {
		lineNo++
		text := sc.Text()
		if lineNo == 1 {
			text = strings.TrimPrefix(text, "\ufeff")
		}
		if !continued {
			start = lineNo
		}
		// pip strips comments before joining continuations, and a comment
		// line ends the logical line even after a backslash.
		text = stripComment(text)
		if strings.HasSuffix(text, `\`) {
			logical.WriteString(strings.TrimSuffix(text, `\`))
			continued = true
			continue
		}
		continued = false
		logical.WriteString(text)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read requirements: %w", err)
	}
	if continued {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	return reqs, nil
}

// stripComment removes a "#" comment that starts the line or follows
// whitespace (a "#" inside a URL fragment is not a comment to pip either).
func stripComment(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t') {
			return s[:i]
		}
	}
	return s
}

func parseRequirementLine(line string, lineNo int) (Requirement, bool, error) {
	line = strings.TrimSpace(line)
	if line == "" {
		return Requirement{}, false, nil
	}
	bad := func(format string, args ...any) (Requirement, bool, error) {
		return Requirement{}, false, fmt.Errorf("requirements line %d: %s", lineNo, fmt.Sprintf(format, args...))
	}
	if strings.HasPrefix(line, "-") {
		opt, _, _ := strings.Cut(line, " ")
		opt, _, _ = strings.Cut(opt, "=")
		return bad("option %s is not supported: sockfaas installs nothing at run time; list installed distributions by name", opt)
	}
	// Per-requirement options follow the requirement: drop hashes, refuse
	// the others (--config-settings and friends act on an install).
	if i := strings.Index(line, " --"); i >= 0 {
		fields := strings.Fields(line[i:])
		for j := 0; j < len(fields); j++ {
			switch f := fields[j]; {
			case strings.HasPrefix(f, "--hash="):
			case f == "--hash":
				j++
			default:
				opt, _, _ := strings.Cut(f, "=")
				return bad("option %s is not supported: sockfaas installs nothing at run time", opt)
			}
		}
		line = strings.TrimSpace(line[:i])
	}
	if strings.Contains(line, "://") || strings.HasPrefix(line, "file:") {
		return bad("%q: URLs are not supported: sockfaas installs nothing at run time", line)
	}
	if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "/") || strings.HasPrefix(line, "~") {
		return bad("%q: local paths are not supported: sockfaas installs nothing at run time", line)
	}
	name := reqName.FindString(line)
	rest := strings.TrimSpace(line[len(name):])
	if name == "" {
		return bad("cannot parse requirement %q", line)
	}
	if strings.ContainsAny(name+firstToken(rest), `/\`) || hasArchiveSuffix(name+firstToken(rest)) {
		return bad("%q: local paths and archives are not supported: sockfaas installs nothing at run time", line)
	}
	if rest != "" {
		switch rest[0] {
		case '[', '(', '=', '!', '<', '>', '~', ';':
		case '@':
			return bad("%q: direct references are not supported: sockfaas installs nothing at run time", line)
		default:
			return bad("cannot parse requirement %q: after the name expect extras, a version specifier or a marker", line)
		}
	}
	return Requirement{Name: name, Spec: rest, Line: lineNo}, true, nil
}

func firstToken(s string) string {
	if i := strings.IndexAny(s, " \t;"); i >= 0 {
		return s[:i]
	}
	return s
}

func hasArchiveSuffix(s string) bool {
	s = strings.ToLower(s)
	for _, suf := range []string{".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz"} {
		if strings.HasSuffix(s, suf) {
			return true
		}
	}
	return false
}

// resolveOutput is resolve.py's answer.
type resolveOutput struct {
	Resolved map[string]struct {
		Version string   `json:"version"`
		Imports []string `json:"imports"`
	} `json:"resolved"`
	Missing []struct {
		Requirement string `json:"requirement"`
		Index       int    `json:"index"`
		Reason      string `json:"reason"`
	} `json:"missing"`
}

// Resolve finds the installed distribution behind each requirement and its
// import names, by running runtimeDir/resolve.py (see WriteRuntime) with
// python ("" means defaultPython). pathDirs are package directories searched
// before python's own sys.path. The map is keyed by Requirement.Name;
// requirements whose environment marker is false here are left out.
//
// If some requirements are not met, the error is a *MissingRequirementsError
// listing all of them (errors.Is(err, ErrMissingRequirement)), and the map
// still holds those that were.
func Resolve(ctx context.Context, python, runtimeDir string, pathDirs []string, reqs []Requirement) (map[string]Resolution, error) {
	out := make(map[string]Resolution, len(reqs))
	if len(reqs) == 0 {
		return out, nil
	}
	if python == "" {
		python = defaultPython
	}
	if _, err := exec.LookPath(python); err != nil {
		return nil, fmt.Errorf("resolve requirements: python %s: %w", python, err)
	}
	// -I: no user site-packages or PYTHON* variables, which sandboxes do not
	// see either.
	args := []string{"-I", filepath.Join(runtimeDir, "resolve.py")}
	for _, d := range pathDirs {
		args = append(args, "--path", d)
	}
	args = append(args, "--")
	for _, r := range reqs {
		args = append(args, r.String())
	}
	cmd := exec.CommandContext(ctx, python, args...)
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("resolve requirements: %w", ctxErr)
		}
		msg := strings.TrimSpace(stderr.String())
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) && exitErr.ExitCode() == 2 {
			return nil, fmt.Errorf("resolve requirements: %s", strings.TrimPrefix(msg, "resolve: "))
		}
		if msg != "" {
			return nil, fmt.Errorf("resolve requirements: %w: %s", err, lastLine(msg))
		}
		return nil, fmt.Errorf("resolve requirements: %w", err)
	}
	var res resolveOutput
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("resolve requirements: bad output from resolve.py: %w", err)
	}
	for name, r := range res.Resolved {
		out[name] = Resolution{Version: r.Version, Imports: r.Imports}
	}
	if len(res.Missing) == 0 {
		return out, nil
	}
	missing := &MissingRequirementsError{}
	for _, m := range res.Missing {
		req := Requirement{Name: m.Requirement}
		if m.Index >= 0 && m.Index < len(reqs) {
			req = reqs[m.Index]
		}
		missing.Missing = append(missing.Missing, MissingRequirement{Requirement: req, Reason: m.Reason})
	}
	return out, missing
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
