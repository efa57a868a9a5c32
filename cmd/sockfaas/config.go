//go:build linux

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
	"gopkg.in/yaml.v3"
)

// Configuration files give flags their values below the command line and
// the environment: flags > SOCKFAAS_* variables > config file > defaults.
//
// A file is YAML whose keys are flag names, at the top level for any
// command, or under a command's name for that command only, which wins:
//
//	state-dir: /run/sockfaas
//	endpoint: http://127.0.0.1:9000
//	run:
//	  listen: 127.0.0.1:9000
//	  zygote: [numpy, "numpy,pandas"]
//
// Keys may use - or _ ("memory-budget", "memory_budget"). An unknown key is
// an error, so a typo does not pass unnoticed.

// defaultConfigFiles are read when --config is not given, the later
// overriding the earlier: the machine's, then the user's.
var defaultConfigFiles = []string{"/etc/sockfaas/config.yaml", "~/.config/sockfaas/config.yaml"}

// configResolver is kong's Resolver over the configuration files. It reads
// them when kong first asks, once the --config flag (or SOCKFAAS_CONFIG)
// is known: an explicit file replaces the default ones and must exist.
type configResolver struct {
	defaults []string
	loaded   bool
	files    []map[string]any // each file's top level
}

var _ kong.Resolver = (*configResolver)(nil)

func (r *configResolver) Validate(*kong.Application) error { return nil }

func (r *configResolver) Resolve(kctx *kong.Context, parent *kong.Path, flag *kong.Flag) (any, error) {
	if !r.loaded {
		if err := r.load(kctx); err != nil {
			return nil, err
		}
		r.loaded = true
	}
	if flag.Name == "config" || flag.Name == "help" {
		return nil, nil
	}
	// kong applies the environment before resolvers run, and a resolver's
	// value would replace it: leave flags set from the environment alone.
	for _, env := range flag.Tag.Envs {
		if _, ok := os.LookupEnv(env); ok {
			return nil, nil
		}
	}
	cmd := ""
	if n := parent.Node(); n != nil && n.Type == kong.CommandNode {
		cmd = n.Path()
	}
	var found any
	for _, top := range r.files { // later files win
		if v, ok := lookupKey(top, flag.Name); ok {
			found = v
		}
		if cmd != "" {
			if sub, ok := lookupSection(top, cmd); ok {
				if v, ok := lookupKey(sub, flag.Name); ok {
					found = v
				}
			}
		}
	}
	if found == nil {
		return nil, nil
	}
	return configValue(found), nil
}

// load reads the files and checks every key against the application's
// flags and commands.
func (r *configResolver) load(kctx *kong.Context) error {
	paths := r.defaults
	explicit := ""
	for _, f := range kctx.Flags() {
		if f.Name == "config" {
			if s, ok := kctx.FlagValue(f).(string); ok && s != "" {
				explicit = s
			}
		}
	}
	if explicit != "" {
		paths = []string{explicit}
	}
	r.files = nil
	for _, p := range paths {
		data, err := os.ReadFile(kong.ExpandPath(p))
		if explicit == "" && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)) {
			continue
		}
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		var top map[string]any
		if err := yaml.Unmarshal(data, &top); err != nil {
			return fmt.Errorf("config file %s: %w", p, err)
		}
		if err := checkConfigKeys(kctx.Model, top); err != nil {
			return fmt.Errorf("config file %s: %w", p, err)
		}
		r.files = append(r.files, top)
	}
	return nil
}

// configKey makes "memory_budget" and "memory-budget" one key.
func configKey(s string) string { return strings.ReplaceAll(strings.ToLower(s), "_", "-") }

func lookupKey(m map[string]any, name string) (any, bool) {
	for k, v := range m {
		if configKey(k) == name {
			if _, isSection := v.(map[string]any); isSection {
				continue
			}
			return v, true
		}
	}
	return nil, false
}

// lookupSection finds the section of a command path ("sandbox run" is
// sandbox: {run: {...}}).
func lookupSection(m map[string]any, cmdPath string) (map[string]any, bool) {
	for _, part := range strings.Fields(cmdPath) {
		var next map[string]any
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok && configKey(k) == part {
				next = sub
			}
		}
		if next == nil {
			return nil, false
		}
		m = next
	}
	return m, true
}

// configValue turns a YAML value into what kong parses: scalars as their
// text, lists as lists of text (a nested list, like a zygote's package
// set, joined with commas).
func configValue(v any) any {
	switch v := v.(type) {
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			if inner, ok := e.([]any); ok {
				parts := make([]string, len(inner))
				for j, p := range inner {
					parts[j] = fmt.Sprint(p)
				}
				out[i] = strings.Join(parts, ",")
				continue
			}
			out[i] = fmt.Sprint(e)
		}
		return out
	default:
		return fmt.Sprint(v)
	}
}

// checkConfigKeys refuses keys that name no flag (at the top level: of any
// command; in a section: of that command or the globals).
func checkConfigKeys(app *kong.Application, top map[string]any) error {
	var unknown []string
	var check func(n *kong.Node, m map[string]any, prefix string, allFlags bool)
	check = func(n *kong.Node, m map[string]any, prefix string, allFlags bool) {
		for k, v := range m {
			key := configKey(k)
			if sub, ok := v.(map[string]any); ok {
				if child := childCommand(n, key); child != nil {
					check(child, sub, prefix+k+".", false)
					continue
				}
			}
			if !hasFlag(app.Node, n, key, allFlags) {
				unknown = append(unknown, prefix+k)
			}
		}
	}
	check(app.Node, top, "", true)
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return fmt.Errorf("unknown key%s %s (keys are flag names, or command names holding them)", plural(len(unknown)), strings.Join(unknown, ", "))
}

func childCommand(n *kong.Node, name string) *kong.Node {
	for _, c := range n.Children {
		if c.Type == kong.CommandNode && (c.Name == name || slices.Contains(c.Aliases, name)) {
			return c
		}
	}
	return nil
}

// hasFlag: is name a flag of n or its ancestors, or (anywhere) of any
// command below root?
func hasFlag(root, n *kong.Node, name string, anywhere bool) bool {
	if anywhere {
		found := false
		_ = kong.Visit(root, func(node kong.Visitable, next kong.Next) error {
			if f, ok := node.(*kong.Flag); ok && f.Name == name {
				found = true
			}
			return next(nil)
		})
		return found
	}
	for ; n != nil; n = n.Parent {
		for _, f := range n.Flags {
			if f.Name == name {
				return true
			}
		}
	}
	return false
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
