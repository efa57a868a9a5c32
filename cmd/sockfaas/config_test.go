//go:build linux

package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/rs/zerolog"
	"github.com/sockfaas/sockfaas/invoker/natsgw"
)

// parseWith parses args as main does, with configFiles as the default
// configuration files.
func parseWith(t *testing.T, configFiles []string, args ...string) (*cli, error) {
	t.Helper()
	var c cli
	k, err := kong.New(&c, append(kongOptions(configFiles), kong.Exit(func(int) { t.Fatal("kong exited") }))...)
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.Parse(args)
	return &c, err
}

func writeConfig(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigPrecedence: flags > environment > config file (the user's over
// the machine's, a command's section over the top level) > defaults.
func TestConfigPrecedence(t *testing.T) {
	for _, env := range []string{"SOCKFAAS_LISTEN", "SOCKFAAS_STATE_DIR", "SOCKFAAS_CONFIG", "SOCKFAAS_ENDPOINT", "SOCKFAAS_TOKEN", "SOCKFAAS_REGISTRY_DIR", "SOCKFAAS_CGROUP"} {
		t.Setenv(env, "")
		os.Unsetenv(env) // t.Setenv restores the original value afterwards
	}
	dir := t.TempDir()
	system := writeConfig(t, dir, "system.yaml", `
state-dir: /run/from-system
listen: 127.0.0.1:1001
cgroup: /from-system
`)
	user := writeConfig(t, dir, "user.yaml", `
listen: 127.0.0.1:1002
memory_budget: 3G
endpoint: http://127.0.0.1:1003
run:
  zygote: [numpy, [numpy, pandas]]
  deploy: [/srv/a, /srv/b]
  no-network: true
`)
	files := []string{system, user, filepath.Join(dir, "missing.yaml")}

	c, err := parseWith(t, nil, "run")
	if err != nil {
		t.Fatal(err)
	}
	if c.Run.Listen != defaultListen || c.StateDir != "/run/sockfaas" || c.Run.NoNetwork {
		t.Fatalf("defaults: listen %q, state dir %q, no-network %v", c.Run.Listen, c.StateDir, c.Run.NoNetwork)
	}

	c, err = parseWith(t, files, "run")
	if err != nil {
		t.Fatal(err)
	}
	if c.Run.Listen != "127.0.0.1:1002" || c.StateDir != "/run/from-system" || c.Cgroup != "/from-system" ||
		c.Run.MemoryBudget != "3G" || !c.Run.NoNetwork ||
		!slices.Equal(c.Run.Zygote, []string{"numpy", "numpy,pandas"}) || !slices.Equal(c.Run.Deploy, []string{"/srv/a", "/srv/b"}) {
		t.Fatalf("config files: %+v %+v", c.globals, c.Run)
	}
	c, err = parseWith(t, files, "ls")
	if err != nil {
		t.Fatal(err)
	}
	if c.Ls.Endpoint != "http://127.0.0.1:1003" {
		t.Fatalf("a top-level key reaches every command's flag: endpoint %q", c.Ls.Endpoint)
	}

	// A command's section wins over the top level.
	sect := writeConfig(t, dir, "section.yaml", "listen: 127.0.0.1:1004\nrun:\n  listen: 127.0.0.1:1005\n")
	if c, err = parseWith(t, []string{sect}, "run"); err != nil || c.Run.Listen != "127.0.0.1:1005" {
		t.Fatalf("section: listen %q, %v", c.Run.Listen, err)
	}

	// The environment beats the files.
	t.Setenv("SOCKFAAS_LISTEN", "127.0.0.1:2001")
	t.Setenv("SOCKFAAS_STATE_DIR", "/run/from-env")
	if c, err = parseWith(t, files, "run"); err != nil {
		t.Fatal(err)
	}
	if c.Run.Listen != "127.0.0.1:2001" || c.StateDir != "/run/from-env" || c.Cgroup != "/from-system" {
		t.Fatalf("environment: listen %q, state dir %q, cgroup %q", c.Run.Listen, c.StateDir, c.Cgroup)
	}

	// Flags beat everything.
	if c, err = parseWith(t, files, "--state-dir", "/run/from-flag", "run", "--listen", "127.0.0.1:3001", "--zygote", "PIL"); err != nil {
		t.Fatal(err)
	}
	if c.Run.Listen != "127.0.0.1:3001" || c.StateDir != "/run/from-flag" || !slices.Equal(c.Run.Zygote, []string{"PIL"}) {
		t.Fatalf("flags: listen %q, state dir %q, zygote %q", c.Run.Listen, c.StateDir, c.Run.Zygote)
	}

	// --config (or SOCKFAAS_CONFIG) replaces the default files.
	os.Unsetenv("SOCKFAAS_LISTEN")
	explicit := writeConfig(t, dir, "explicit.yaml", "cgroup: /from-explicit\n")
	if c, err = parseWith(t, files, "--config", explicit, "run"); err != nil {
		t.Fatal(err)
	}
	if c.Cgroup != "/from-explicit" || c.Run.Listen != defaultListen || c.Run.NoNetwork {
		t.Fatalf("--config: cgroup %q, listen %q, no-network %v", c.Cgroup, c.Run.Listen, c.Run.NoNetwork)
	}
	t.Setenv("SOCKFAAS_CONFIG", explicit)
	if c, err = parseWith(t, files, "run"); err != nil || c.Cgroup != "/from-explicit" {
		t.Fatalf("SOCKFAAS_CONFIG: cgroup %q, %v", c.Cgroup, err)
	}
	if _, err = parseWith(t, files, "--config", filepath.Join(dir, "missing.yaml"), "run"); err == nil {
		t.Fatal("a missing --config file: no error")
	}
}

func TestConfigErrors(t *testing.T) {
	os.Unsetenv("SOCKFAAS_CONFIG")
	dir := t.TempDir()
	for text, want := range map[string]string{
		"lisen: 127.0.0.1:1\n":          "unknown key lisen",
		"run:\n  endpoint: x\n":         "unknown key run.endpoint", // a flag of other commands only
		"run: [\n":                      "yaml",
		"sandbox:\n  run:\n    nope: 1": "unknown key sandbox.run.nope",
	} {
		p := writeConfig(t, dir, "c.yaml", text)
		_, err := parseWith(t, []string{p}, "run")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error with %q", text, err, want)
		}
	}
	// A section for a nested command.
	p := writeConfig(t, dir, "c.yaml", "sandbox:\n  run:\n    memory: 64M\n")
	c, err := parseWith(t, []string{p}, "sandbox", "run", "--", "/bin/true")
	if err != nil || c.Sandbox.Run.Memory != "64M" {
		t.Fatalf("sandbox run section: memory %q, %v", c.Sandbox.Run.Memory, err)
	}
}

func TestCheckListen(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8088": true, "[::1]:8088": true, "localhost:8088": true, "127.0.0.2:1": true,
		"0.0.0.0:8088": false, ":8088": false, "192.168.1.5:8088": false, "example.com:80": false, "nonsense": false,
	} {
		if err := checkListen(addr, ""); (err == nil) != ok {
			t.Errorf("%s without a token: %v", addr, err)
		}
	}
	if err := checkListen("0.0.0.0:8088", "secret"); err != nil {
		t.Errorf("with a token: %v", err)
	}
	if err := checkListen(":8088", ""); err == nil || !strings.Contains(err.Error(), "--token") {
		t.Errorf("the error should say how to fix it: %v", err)
	}
}

// TestGatewayFlags: the gateway's flags come from the config file, the
// environment and the command line like the others, and are checked
// before anything starts.
func TestGatewayFlags(t *testing.T) {
	for _, env := range []string{"SOCKFAAS_CONFIG", "SOCKFAAS_GATEWAY", "SOCKFAAS_NATS_LISTEN", "SOCKFAAS_NATS_STORE", "SOCKFAAS_NATS_CREDS", "SOCKFAAS_NATS_PREFIX", "SOCKFAAS_HOST_ID"} {
		t.Setenv(env, "")
		os.Unsetenv(env)
	}
	c, err := parseWith(t, nil, "run")
	if err != nil {
		t.Fatal(err)
	}
	if g := c.Run.gatewayFlags; g.Gateway != "none" || g.NatsListen != "127.0.0.1:4222" || g.NatsStore != defaultNATSStore || g.NatsPrefix != "sockfaas" || g.HostID != "" {
		t.Fatalf("defaults: %+v", g)
	}
	dir := t.TempDir()
	files := []string{writeConfig(t, dir, "c.yaml", "run:\n  gateway: embedded\n  nats-listen: 127.0.0.1:1001\n  host-id: from-file\n  nats_prefix: pfx\n")}
	if c, err = parseWith(t, files, "run"); err != nil {
		t.Fatal(err)
	}
	if g := c.Run.gatewayFlags; g.Gateway != "embedded" || g.NatsListen != "127.0.0.1:1001" || g.HostID != "from-file" || g.NatsPrefix != "pfx" {
		t.Fatalf("config file: %+v", g)
	}
	t.Setenv("SOCKFAAS_GATEWAY", "nats://127.0.0.1:2001")
	t.Setenv("SOCKFAAS_HOST_ID", "from-env")
	if c, err = parseWith(t, files, "run"); err != nil {
		t.Fatal(err)
	}
	if g := c.Run.gatewayFlags; g.Gateway != "nats://127.0.0.1:2001" || g.HostID != "from-env" || g.NatsListen != "127.0.0.1:1001" {
		t.Fatalf("environment: %+v", g)
	}
	if c, err = parseWith(t, files, "run", "--gateway", "none", "--host-id", "from-flag"); err != nil {
		t.Fatal(err)
	}
	if g := c.Run.gatewayFlags; g.Gateway != "none" || g.HostID != "from-flag" {
		t.Fatalf("flags: %+v", g)
	}
	// doctor reads the same variable, to check the servers.
	if c, err = parseWith(t, files, "doctor"); err != nil || c.Doctor.Gateway != "nats://127.0.0.1:2001" {
		t.Fatalf("doctor: gateway %q, %v", c.Doctor.Gateway, err)
	}
}

func TestGatewayPlan(t *testing.T) {
	log := zerolog.Nop()
	creds := writeConfig(t, t.TempDir(), "x.creds", "not checked here")
	base := gatewayFlags{Gateway: "none", NatsListen: "127.0.0.1:4222", NatsStore: "/var/lib/sockfaas/nats", NatsPrefix: "sockfaas"}
	for _, tc := range []struct {
		change func(*gatewayFlags)
		mode   gatewayMode
		err    string
	}{
		{func(f *gatewayFlags) {}, gatewayNone, ""},
		{func(f *gatewayFlags) { f.Gateway = "" }, gatewayNone, ""},
		{func(f *gatewayFlags) { f.Gateway = "Embedded" }, gatewayEmbedded, ""},
		{func(f *gatewayFlags) { f.Gateway = "nats://a:4222, nats://b:4223" }, gatewayJoin, ""},
		{func(f *gatewayFlags) { f.Gateway = "tls://u:p@a" }, gatewayJoin, ""},
		{func(f *gatewayFlags) { f.Gateway = "nats://a:4222"; f.NatsCreds = creds }, gatewayJoin, ""},
		{func(f *gatewayFlags) { f.Gateway = "nats://a:4222"; f.NatsCreds = "/nonexistent/x.creds" }, 0, "--nats-creds"},
		{func(f *gatewayFlags) { f.Gateway = "embedded"; f.NatsCreds = creds }, 0, "--nats-creds is for joining"},
		{func(f *gatewayFlags) { f.Gateway = "a:4222" }, 0, "(nats://a:4222?)"},
		{func(f *gatewayFlags) { f.Gateway = "nats://a:4222,http://b" }, 0, `scheme "http"`},
		{func(f *gatewayFlags) { f.Gateway = "nats://a:0" }, 0, "port"},
		{func(f *gatewayFlags) { f.Gateway = "nats://a:4222/path" }, 0, "no path"},
		{func(f *gatewayFlags) { f.Gateway = "nats://:4222" }, 0, "no host"},
		{func(f *gatewayFlags) { f.Gateway = "nats://u:secret@:4222" }, 0, "xxxxx"},
		{func(f *gatewayFlags) { f.Gateway = "embedded"; f.HostID = "a b" }, 0, "--host-id"},
		{func(f *gatewayFlags) { f.Gateway = "embedded"; f.HostID = strings.Repeat("h", 65) }, 0, "--host-id"},
		{func(f *gatewayFlags) { f.Gateway = "embedded"; f.NatsPrefix = "a.b" }, 0, "--nats-prefix"},
		{func(f *gatewayFlags) { f.Gateway = "embedded"; f.NatsListen = "4222" }, 0, "--nats-listen"},
		{func(f *gatewayFlags) { f.Gateway = "embedded"; f.NatsListen = "127.0.0.1:70000" }, 0, "--nats-listen"},
		{func(f *gatewayFlags) { f.Gateway = "embedded"; f.NatsStore = "rel" }, 0, "--nats-store"},
	} {
		f := base
		tc.change(&f)
		p, err := f.plan(nil, log)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%+v: %v", f, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%+v: got %v, want an error with %q", f, err, tc.err)
		case tc.err != "" && strings.Contains(err.Error(), "secret"):
			t.Errorf("%+v: the password is in the error: %v", f, err)
		case err == nil && p.mode != tc.mode:
			t.Errorf("%+v: mode %d, want %d", f, p.mode, tc.mode)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://a:4222":                     "nats://a:4222",
		"nats://u:pw@a:4222,nats://t0k@b:1": "nats://u:xxxxx@a:4222,nats://xxxxx@b:1",
	} {
		if got := natsgw.Redact(in); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}
