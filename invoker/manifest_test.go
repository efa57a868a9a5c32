package invoker

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sockfaas/sockfaas/netns"
)

func TestParseManifest(t *testing.T) {
	m, err := ParseManifest([]byte(`
handler: app.main
runtime: python3
style: lambda
requirements: [numpy>=1.20, Pillow]
memory_mb: 256
cpu_millis: 500
timeout_sec: 10
environment:
  GREETING: hi
  DEBUG: 1
max_concurrency: 4
network: isolated
ports: [8080, 9090]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Manifest{
		Handler: "app.main", Runtime: "python3", Style: StyleLambda,
		Requirements: []string{"numpy>=1.20", "Pillow"},
		MemoryMB:     256, CPUMillis: 500, TimeoutSec: 10,
		Environment:    map[string]string{"GREETING": "hi", "DEBUG": "1"},
		MaxConcurrency: 4, Network: netns.ModeIsolated, Ports: []int{8080, 9090},
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v\nwant %+v", m, want)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}

	for _, empty := range []string{"", "# only a comment\n", "---\n"} {
		m, err := ParseManifest([]byte(empty))
		if err != nil || !reflect.DeepEqual(m, Manifest{}) {
			t.Errorf("ParseManifest(%q) = %+v, %v; want the zero manifest", empty, m, err)
		}
	}
}

func TestParseManifestRejects(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"handler: a.b\nmemroy_mb: 256\n", `line 2: unknown field "memroy_mb"`},
		{"memory_mb: lots\n", "line 1: cannot unmarshal !!str `lots` into int"},
		{"ports: 8080\n", "line 1: cannot unmarshal !!int `8080` into []int"},
		{"network: [a]\n", "into string"},
		{"handler: a.b\n---\nhandler: c.d\n", "more than one YAML document"},
		{"handler: [\n", "line 1"},
		{"- a\n- b\n", "into invoker.Manifest"},
	} {
		_, err := ParseManifest([]byte(tc.in))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseManifest(%q) = %v; want ErrInvalid containing %q", tc.in, err, tc.want)
		}
	}
}

func TestManifestValidate(t *testing.T) {
	if err := (Manifest{}).Validate(); err != nil {
		t.Fatalf("zero manifest: %v", err)
	}
	if err := (Manifest{}).WithDefaults().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		m    Manifest
		want string
	}{
		{Manifest{Handler: "lambda_handler"}, "want module.function"},
		{Manifest{Handler: "a..b"}, "want module.function"},
		{Manifest{Handler: "pkg/mod.f"}, "want module.function"},
		{Manifest{Handler: "a.b-c"}, "want module.function"},
		{Manifest{Handler: "import.f"}, "Python keyword"},
		{Manifest{Runtime: "nodejs20.x"}, `runtime "nodejs20.x" is not supported: the only runtime is "python3"`},
		{Manifest{Runtime: "python3.12"}, "not supported"},
		{Manifest{Style: "aws"}, `style "aws"`},
		{Manifest{Requirements: []string{"numpy", " "}}, "requirements[1] is empty"},
		{Manifest{MemoryMB: 64}, "memory_mb 64: want 128..10240"},
		{Manifest{MemoryMB: 10241}, "memory_mb 10241"},
		{Manifest{CPUMillis: 5}, "cpu_millis 5"},
		{Manifest{CPUMillis: -1}, "cpu_millis -1"},
		{Manifest{TimeoutSec: 901}, "timeout_sec 901: want 1..900"},
		{Manifest{TimeoutSec: -1}, "timeout_sec -1"},
		{Manifest{Environment: map[string]string{"1X": "v"}}, `environment "1X"`},
		{Manifest{Environment: map[string]string{"A-B": "v"}}, `environment "A-B"`},
		{Manifest{Environment: map[string]string{"": "v"}}, `environment ""`},
		{Manifest{Environment: map[string]string{"AWS_REGION": "x"}}, `"AWS_REGION" is reserved`},
		{Manifest{Environment: map[string]string{"aws_region": "x"}}, `"aws_region" is reserved`},
		{Manifest{Environment: map[string]string{"SOCKFAAS_X": "x"}}, "reserved"},
		{Manifest{Environment: map[string]string{"_HANDLER": "x"}}, "reserved"},
		{Manifest{Environment: map[string]string{"A": "x\x00y"}}, "NUL"},
		{Manifest{Environment: map[string]string{"A": strings.Repeat("x", MaxEnvironmentBytes)}}, "more than 4096"},
		{Manifest{MaxConcurrency: -1}, "max_concurrency -1"},
		{Manifest{Network: "bridge"}, `network "bridge": want none, shared, isolated or host`},
		{Manifest{Ports: []int{0}}, "0 is not a port"},
		{Manifest{Ports: []int{65536}}, "65536 is not a port"},
		{Manifest{Ports: []int{80, 80}}, "80 is listed twice"},
		{Manifest{Network: netns.ModeNone, Ports: []int{80}}, "ports need network shared or isolated, not none"},
		{Manifest{Network: netns.ModeHost, Ports: []int{80}}, "not host"},
	} {
		err := tc.m.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: Validate() = %v; want ErrInvalid containing %q", tc.m, err, tc.want)
		}
	}
	// Every problem at once.
	err := Manifest{MemoryMB: 1, TimeoutSec: 1000}.Validate()
	if err == nil || !strings.Contains(err.Error(), "memory_mb") || !strings.Contains(err.Error(), "timeout_sec") {
		t.Errorf("want both problems, got %v", err)
	}
}

func TestWithDefaults(t *testing.T) {
	got := Manifest{}.WithDefaults()
	want := Manifest{
		Handler: DefaultHandler, Runtime: RuntimePython3, Style: StyleLambda,
		MemoryMB: 128, TimeoutSec: 3, Network: netns.ModeShared,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if s := (Manifest{Handler: OpenLambdaHandler}).WithDefaults().Style; s != StyleOpenLambda {
		t.Errorf("style of f.f = %q", s)
	}
	if s := (Manifest{Handler: "f.f", Style: StyleLambda}).WithDefaults().Style; s != StyleLambda {
		t.Errorf("an explicit style changed to %q", s)
	}
	if d := (Manifest{}).Timeout(); d.Seconds() != 3 {
		t.Errorf("default Timeout() = %v", d)
	}
}

func TestDefinesName(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want bool
	}{
		{"def handler(event, context):\n    pass\n", true},
		{"async def handler(event, context):\n    pass\n", true},
		{"def  handler (e, c): pass", true},
		{"class Foo:\n    def handler(self): pass\n", true}, // a heuristic: accepted
		{"class handler:\n    def __call__(self, e, c): pass\n", true},
		{"handler = make()\n", true},
		{"handler: Callable = make()\n", true},
		{"from app.impl import handler\n", true},
		{"from app.impl import run as handler\n", true},
		{"from app.impl import (\n    other,\n    handler,\n)\n", true},
		{"def handler_v2(event, context): pass\n", false},
		{"def my_handler(event, context): pass\n", false},
		{"# def handler(event, context)\n", false},
		{"handler == 3\n", false},
		{"x = 'handler'\n", false},
		{"", false},
	} {
		if got := definesName([]byte(tc.src), "handler"); got != tc.want {
			t.Errorf("definesName(%q) = %v, want %v", tc.src, got, tc.want)
		}
	}
}

func TestLoadManifest(t *testing.T) {
	write := func(t *testing.T, files map[string]string) *os.Root {
		t.Helper()
		dir := t.TempDir()
		for name, body := range files {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		root, err := os.OpenRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { root.Close() })
		return root
	}
	const lambda = "def lambda_handler(event, context):\n    return event\n"
	const ol = "def f(event):\n    return event\n"

	t.Run("defaults", func(t *testing.T) {
		lm, err := loadManifest(write(t, map[string]string{"lambda_function.py": lambda}))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(lm.manifest, Manifest{}.WithDefaults()) || len(lm.reqs) != 0 {
			t.Fatalf("got %+v", lm)
		}
	})
	t.Run("openlambda", func(t *testing.T) {
		lm, err := loadManifest(write(t, map[string]string{"f.py": ol}))
		if err != nil {
			t.Fatal(err)
		}
		if lm.manifest.Handler != "f.f" || lm.manifest.Style != StyleOpenLambda {
			t.Fatalf("got %+v", lm.manifest)
		}
		// lambda_function.py wins over f.py.
		lm, err = loadManifest(write(t, map[string]string{"f.py": ol, "lambda_function.py": lambda}))
		if err != nil || lm.manifest.Handler != DefaultHandler {
			t.Fatalf("got %+v, %v", lm.manifest, err)
		}
	})
	t.Run("requirements", func(t *testing.T) {
		lm, err := loadManifest(write(t, map[string]string{
			"function.yaml":      "requirements: [Pillow, 'numpy>=1.20  # comment']\n",
			"requirements.txt":   "# c\n\nPyYAML~=6.0\nrequests[socks]\n",
			"lambda_function.py": lambda,
		}))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"Pillow", "numpy>=1.20", "PyYAML~=6.0", "requests[socks]"}
		if !reflect.DeepEqual(lm.manifest.Requirements, want) {
			t.Errorf("requirements %q, want %q", lm.manifest.Requirements, want)
		}
		wantOrigins := []string{"function.yaml requirements[0]", "function.yaml requirements[1]", "requirements.txt line 3", "requirements.txt line 4"}
		if !reflect.DeepEqual(lm.origins, wantOrigins) {
			t.Errorf("origins %q, want %q", lm.origins, wantOrigins)
		}
	})
	t.Run("package handler", func(t *testing.T) {
		for _, layout := range []map[string]string{
			{"sockfaas.yaml": "handler: pkg.mod.run", "pkg/mod.py": "def run(e, c): pass"},
			{"sockfaas.yaml": "handler: pkg.mod.run", "pkg/mod/__init__.py": "def run(e, c): pass"},
		} {
			if _, err := loadManifest(write(t, layout)); err != nil {
				t.Errorf("%v: %v", layout, err)
			}
		}
	})

	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no handler module", map[string]string{"app.py": lambda},
			"handler lambda_function.lambda_handler: module file lambda_function.py not found in the code (the code has app.py; set handler in sockfaas.yaml)"},
		{"no handler function", map[string]string{"lambda_function.py": "def handler(e, c): pass\n"},
			`lambda_function.py does not define lambda_handler (no "def lambda_handler" found)`},
		{"handler module is a directory", map[string]string{"sockfaas.yaml": "handler: pkg.f", "pkg/x.py": ""},
			"module file pkg.py not found"},
		{"both manifests", map[string]string{"sockfaas.yaml": "", "function.yaml": "", "lambda_function.py": lambda},
			"both sockfaas.yaml and function.yaml are present"},
		{"unknown field", map[string]string{"sockfaas.yaml": "handlr: a.b\n", "lambda_function.py": lambda},
			`sockfaas.yaml: invalid argument: line 1: unknown field "handlr"`},
		{"bad runtime", map[string]string{"function.yaml": "runtime: nodejs20.x\n", "lambda_function.py": lambda},
			`function.yaml: invalid argument: runtime "nodejs20.x" is not supported`},
		{"duplicate requirement", map[string]string{"sockfaas.yaml": "requirements: [numpy]", "requirements.txt": "\nNumPy>=1\n", "lambda_function.py": lambda},
			`requirement "NumPy" appears twice (sockfaas.yaml requirements[0] and requirements.txt line 2)`},
		{"duplicate after normalisation", map[string]string{"requirements.txt": "zope.interface\nZope_Interface\n", "lambda_function.py": lambda},
			`requirement "Zope_Interface" appears twice`},
		{"two requirements in one entry", map[string]string{"sockfaas.yaml": "requirements: [\"a\\nb\"]", "lambda_function.py": lambda},
			"want one requirement per entry"},
		{"requirement option in the manifest", map[string]string{"sockfaas.yaml": "requirements: ['-r other.txt']", "lambda_function.py": lambda},
			"sockfaas.yaml requirements[0]: option -r is not supported"},
		{"requirement URL in requirements.txt", map[string]string{"requirements.txt": "numpy\nhttps://x/y.whl\n", "lambda_function.py": lambda},
			"requirements.txt: requirements line 2: \"https://x/y.whl\": URLs are not supported"},
		{"manifest too large", map[string]string{"sockfaas.yaml": strings.Repeat("#", maxConfigBytes+1), "lambda_function.py": lambda},
			"sockfaas.yaml is larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadManifest(write(t, tc.files))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}
