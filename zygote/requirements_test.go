package zygote

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseRequirements(t *testing.T) {
	in := "\ufeff# a comment line\n" +
		"\n" +
		"numpy>=1.20   # trailing comment\n" +
		"Pillow\n" +
		"pandas[performance]==2.0\n" +
		"requests [socks] >= 2.8.1, == 2.8.*\n" +
		"tomli; python_version < \"3.11\"\n" +
		"zope.interface (>=5)\n" +
		"scipy \\\n" +
		"  >=1.10 \\\n" +
		"  ; sys_platform == 'linux'\n" +
		"attrs==22.2.0 --hash=sha256:abc --hash sha256:def\n" +
		"   \t\n" +
		"PyYAML~=6.0"
	got, err := ParseRequirements(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Requirement{
		{Name: "numpy", Spec: ">=1.20", Line: 3},
		{Name: "Pillow", Line: 4},
		{Name: "pandas", Spec: "[performance]==2.0", Line: 5},
		{Name: "requests", Spec: "[socks] >= 2.8.1, == 2.8.*", Line: 6},
		{Name: "tomli", Spec: "; python_version < \"3.11\"", Line: 7},
		{Name: "zope.interface", Spec: "(>=5)", Line: 8},
		{Name: "scipy", Spec: ">=1.10   ; sys_platform == 'linux'", Line: 9},
		{Name: "attrs", Spec: "==22.2.0", Line: 12},
		{Name: "PyYAML", Spec: "~=6.0", Line: 14},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	if s := got[4].String(); s != "tomli ; python_version < \"3.11\"" {
		t.Errorf("String() = %q", s)
	}
	if s := got[2].String(); s != "pandas[performance]==2.0" {
		t.Errorf("String() = %q", s)
	}

	if got, err := ParseRequirements(strings.NewReader("")); err != nil || len(got) != 0 {
		t.Fatalf("empty file: %v %v", got, err)
	}
	// A continuation on the last line, and a comment ending a continuation.
	got, err = ParseRequirements(strings.NewReader("a \\\n# note\nb\\"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []Requirement{{Name: "a", Line: 1}, {Name: "b", Line: 3}}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseRequirementsRejects(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"numpy\n-r other.txt", "line 2: option -r is not supported"},
		{"--index-url https://example.org/simple", "line 1: option --index-url"},
		{"-e git+https://example.org/x.git#egg=x", "line 1: option -e"},
		{"--extra-index-url=https://x", "option --extra-index-url is"},
		{"https://example.org/pkg-1.0.tar.gz", "URLs are not supported"},
		{"pkg @ https://example.org/pkg.whl", "URLs are not supported"},
		{"pkg @ file:///tmp/pkg", "URLs are not supported"},
		{"./local/pkg", "local paths are not supported"},
		{"/abs/pkg", "local paths are not supported"},
		{"dist/pkg-1.0-py3-none-any.whl", "local paths and archives"},
		{"pkg-1.0.tar.gz", "local paths and archives"},
		{"numpy 1.2", "cannot parse requirement"},
		{"numpy==1 --config-settings x=y", "option --config-settings"},
		{"a\n\\\n!!!", "line 2: cannot parse requirement"},
	} {
		_, err := ParseRequirements(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
}

func requireDists(t *testing.T, imports ...string) {
	t.Helper()
	requirePython(t)
	for _, m := range imports {
		if err := exec.Command(hostPython, "-c", "import "+m).Run(); err != nil {
			t.Skipf("skipping: %s is not installed for %s", m, hostPython)
		}
	}
}

func TestResolveHostPackages(t *testing.T) {
	requireDists(t, "numpy", "pandas", "PIL")
	rt := testRuntime(t)
	reqs, err := ParseRequirements(strings.NewReader("numpy>=1.20\npandas\nPillow\npillow  # the same, lower case\n"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	got, err := Resolve(ctx, "", rt, nil, reqs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("resolved in %v: %+v", time.Since(start), got)
	for name, imp := range map[string]string{"numpy": "numpy", "pandas": "pandas", "Pillow": "PIL", "pillow": "PIL"} {
		r, ok := got[name]
		if !ok || !slices.Equal(r.Imports, []string{imp}) || r.Version == "" {
			t.Errorf("%s: got %+v, want imports [%s]", name, r, imp)
		}
	}
	// The version matches the one Python reports.
	out, err := exec.Command(hostPython, "-c", "import numpy; print(numpy.__version__)").Output()
	if err != nil {
		t.Fatal(err)
	}
	if v := strings.TrimSpace(string(out)); got["numpy"].Version != v {
		t.Errorf("numpy version %q, python says %q", got["numpy"].Version, v)
	}
}

func TestResolveMissing(t *testing.T) {
	requireDists(t, "numpy")
	rt := testRuntime(t)
	reqs, err := ParseRequirements(strings.NewReader(
		"numpy\nsockfaas-no-such-dist\nnumpy>=999\nnumpy<1.0,!=0.5\nnumpy; python_version < \"3\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Resolve(context.Background(), hostPython, rt, nil, reqs)
	if !errors.Is(err, ErrMissingRequirement) {
		t.Fatalf("got %v, want ErrMissingRequirement", err)
	}
	var me *MissingRequirementsError
	if !errors.As(err, &me) || len(me.Missing) != 3 {
		t.Fatalf("got %#v", err)
	}
	if m := me.Missing[0]; m.Requirement.Name != "sockfaas-no-such-dist" || m.Requirement.Line != 2 || m.Reason != "not installed" {
		t.Errorf("missing[0] = %+v", m)
	}
	if m := me.Missing[1]; m.Requirement.Line != 3 || !strings.HasPrefix(m.Reason, "version ") || !strings.HasSuffix(m.Reason, "does not satisfy >=999") {
		t.Errorf("missing[1] = %+v", m)
	}
	if m := me.Missing[2]; m.Requirement.Line != 4 || !strings.HasSuffix(m.Reason, "does not satisfy <1.0,!=0.5") {
		t.Errorf("missing[2] = %+v", m)
	}
	for _, s := range []string{"sockfaas-no-such-dist (line 2): not installed", "numpy>=999 (line 3): version"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	// What could be resolved still is.
	if _, ok := got["numpy"]; !ok {
		t.Errorf("numpy missing from the partial result %v", got)
	}
}

// TestResolvePathDirs checks extra package directories and import names
// derived from RECORD when there is no top_level.txt.
func TestResolvePathDirs(t *testing.T) {
	requirePython(t)
	rt := testRuntime(t)
	pkgs := t.TempDir()
	info := filepath.Join(pkgs, "Fake_Dist-1.2.3.dist-info")
	files := map[string]string{
		"Fake_Dist-1.2.3.dist-info/METADATA": "Metadata-Version: 2.1\nName: Fake_Dist\nVersion: 1.2.3\n",
		"Fake_Dist-1.2.3.dist-info/RECORD": "fakepkg/__init__.py,,\nfakepkg/sub/x.py,,\n_fake_private.py,,\n" +
			"fake_single.py,,\nfakeext.cpython-311-x86_64-linux-gnu.so,,\nfake.libs/libz.so,,\n" +
			"__pycache__/fake_single.cpython-311.pyc,,\nFake_Dist-1.2.3.dist-info/RECORD,,\n../../bin/fake,,\n",
		"fakepkg/__init__.py": "",
	}
	for name, content := range files {
		p := filepath.Join(pkgs, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_ = info
	reqs := []Requirement{{Name: "fake-dist", Spec: "~=1.2.0", Line: 1}, {Name: "FAKE.DIST", Spec: "==1.2.*", Line: 2}}
	got, err := Resolve(context.Background(), "", rt, []string{pkgs}, reqs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"fake_single", "fakeext", "fakepkg"}
	for _, name := range []string{"fake-dist", "FAKE.DIST"} {
		if r := got[name]; r.Version != "1.2.3" || !slices.Equal(r.Imports, want) {
			t.Errorf("%s: got %+v, want 1.2.3 %v", name, r, want)
		}
	}
	// Without the directory it is not found.
	if _, err := Resolve(context.Background(), "", rt, nil, reqs[:1]); !errors.Is(err, ErrMissingRequirement) {
		t.Errorf("without --path: %v", err)
	}
}

func TestResolveErrors(t *testing.T) {
	requirePython(t)
	rt := testRuntime(t)
	ctx := context.Background()

	if got, err := Resolve(ctx, "/nonexistent/python3", rt, nil, nil); err != nil || len(got) != 0 {
		t.Errorf("no requirements: %v %v", got, err)
	}
	_, err := Resolve(ctx, "/nonexistent/python3", rt, nil, []Requirement{{Name: "numpy"}})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/python3") {
		t.Errorf("absent python: %v", err)
	}
	// Bad input is not a missing requirement.
	_, err = Resolve(ctx, "", rt, nil, []Requirement{{Name: "numpy", Spec: "; python_version <<< '3'"}})
	if err == nil || errors.Is(err, ErrMissingRequirement) || !strings.Contains(err.Error(), "marker") {
		t.Errorf("bad marker: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Resolve(cctx, "", rt, nil, []Requirement{{Name: "numpy"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	// A runtime directory without resolve.py.
	if _, err := Resolve(ctx, "", t.TempDir(), nil, []Requirement{{Name: "numpy"}}); err == nil {
		t.Error("no resolve.py: no error")
	}
}

// TestResolveVersionRules runs resolve.py's specifier and marker logic
// directly, for the cases no installed package exercises.
func TestResolveVersionRules(t *testing.T) {
	requirePython(t)
	rt := testRuntime(t)
	script := `
import sys
sys.path.insert(0, sys.argv[1])
from resolve import satisfies, evaluate_marker, _environment
cases = [
    ("1.24.2", ">=", "1.20", True), ("1.24.2", "<", "1.3", False), ("1.10", ">", "1.9", True),
    ("1.0", "==", "1.0.0", True), ("1.0+deb1", "==", "1.0", True), ("1.0.post1", ">", "1.0", True),
    ("1.0.dev1", "<", "1.0a1", True), ("1.0a1", "<", "1.0rc1", True), ("2.0rc1", "<", "2.0", True),
    ("1.24.2", "~=", "1.24", True), ("1.24.2", "~=", "1.23", True), ("1.24.2", "~=", "1.23.0", False), ("1.24.2", "~=", "1.24.1", True),
    ("2.0", "~=", "1.4", False), ("1.24.2", "==", "1.24.*", True), ("1.25.0", "==", "1.24.*", False),
    ("1.24.2", "!=", "1.24.*", False), ("1.24.2", "!=", "1.24.3", True), ("1!1.0", ">", "2.0", True),
    ("abc", "==", "abc", True), ("abc", "<", "abd", True), ("1.0", "===", "1.0", True),
]
bad = [c for c in cases if satisfies(c[0], c[1], c[2]) != c[3]]
env = _environment()
markers = [
    ('python_version >= "3" and (sys_platform == "linux" or os_name == "nt")', True),
    ('python_version < "3"', False), ('"linux" in sys_platform', True), ('extra == "x"', False),
    ("platform_system != 'Windows' and implementation_name == 'cpython'", True),
]
bad += [m for m in markers if evaluate_marker(m[0], env) != m[1]]
print(bad)
`
	out, err := exec.Command(hostPython, "-c", script, rt).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "[]" {
		t.Fatalf("wrong answers (or error %v): %s", err, out)
	}
}
