//go:build linux

// Command sockfaas is the sockfaas CLI: the invoker and its HTTP APIs
// (sockfaas run), the client commands that talk to it, and lean sandboxes
// on their own, on one Linux machine.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/invoker"
	"github.com/sockfaas/sockfaas/invoker/natsgw"
	"github.com/sockfaas/sockfaas/invoker/natsgw/embedded"
	"github.com/sockfaas/sockfaas/sandbox/libct"
)

// version is set by the linker: -ldflags "-X main.version=..."
var version = "dev"

type globals struct {
	LogLevel  string `help:"Log level: debug, info, warn, error (default: warn for one-shot commands, info for services)." enum:"debug,info,warn,error," default:"" env:"SOCKFAAS_LOG_LEVEL"`
	LogFormat string `help:"Log format: auto (console on a terminal, JSON otherwise), console, json." default:"auto" enum:"auto,console,json" env:"SOCKFAAS_LOG_FORMAT"`
	StateDir  string `help:"State directory (keep it short: Unix socket paths are limited to 108 bytes)." default:"/run/sockfaas" env:"SOCKFAAS_STATE_DIR"`
	Cgroup    string `help:"Absolute cgroup path for sockfaas's cgroups." default:"/sockfaas" env:"SOCKFAAS_CGROUP"`
	Config    string `help:"YAML file of flag values (keys are flag names); replaces the defaults ${config_files}." env:"SOCKFAAS_CONFIG" type:"path" placeholder:"FILE"`
}

type cli struct {
	globals

	Run    runCmd    `cmd:"" help:"Run the invoker and its HTTP APIs (native, AWS Lambda, OpenLambda) in the foreground."`
	Deploy deployCmd `cmd:"" help:"Deploy a function from a directory or a .tar.gz to a running invoker."`
	Invoke invokeCmd `cmd:"" help:"Invoke a function and print its result."`
	Ls     lsCmd     `cmd:"" help:"List the deployed functions."`
	Rm     rmCmd     `cmd:"" help:"Remove functions and their instances."`
	Ps     psCmd     `cmd:"" help:"Show instances, zygotes and caches."`
	Logs   logsCmd   `cmd:"" help:"Print a function's captured output (stdout and stderr of its handlers)."`
	Dead   deadCmd   `cmd:"" name:"dead-letters" help:"List the asynchronous invocations that failed every attempt."`
	Doctor doctorCmd `cmd:"" help:"Check this machine for what sockfaas needs, and say how to fix what is missing."`

	Demo    demoCmd    `cmd:"" help:"Create a lean sandbox, run commands in it that show its isolation, and time it."`
	Sandbox sandboxCmd `cmd:"" help:"Work with single sandboxes."`
	Cleanup cleanupCmd `cmd:"" help:"Remove what a crashed sockfaas left behind (processes, mounts, cgroups)."`
	Version versionCmd `cmd:"" help:"Print the version."`
	Compl   complCmd   `cmd:"" name:"completion" help:"Print a shell completion script (bash, zsh or fish)."`
}

type sandboxCmd struct {
	Run sandboxRunCmd `cmd:"" help:"Run a command in a new sandbox, attached to this terminal, and destroy the sandbox when it exits."`
}

func main() {
	// The libcontainer backend re-executes this binary as "init".
	libct.Init()

	var c cli
	kctx := kong.Parse(&c, kongOptions(defaultConfigFiles)...)
	if c.LogLevel == "" {
		c.LogLevel = "warn" // one-shot commands say only what went wrong
		if kctx.Command() == "run" {
			c.LogLevel = "info" // a service logs its lifecycle
		}
	}
	log := newLogger(c.globals)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.Bind(&c.globals, log)
	err := kctx.Run()
	_ = os.Remove(c.StateDir) // only when empty: leave nothing behind
	var code exitCode
	if errors.As(err, &code) {
		os.Exit(int(code))
	}
	if err != nil {
		log.Error().Err(err).Msg("sockfaas " + kctx.Command())
		os.Exit(1)
	}
}

// kongOptions describe the CLI to kong; configFiles are read when --config
// is not given (see configResolver).
func kongOptions(configFiles []string) []kong.Option {
	return []kong.Option{
		kong.Name("sockfaas"),
		kong.Description("Fast lean sandboxes for serverless functions on one Linux machine."),
		kong.UsageOnError(),
		kong.Vars{
			"version":      version,
			"endpoint":     defaultEndpoint,
			"listen":       defaultListen,
			"registry_dir": invoker.DefaultRegistryDir,
			"nats_listen":  embedded.DefaultListen,
			"nats_store":   defaultNATSStore,
			"nats_prefix":  natsgw.DefaultPrefix,
			"config_files": strings.Join(configFiles, " and "),
		},
		kong.Resolvers(&configResolver{defaults: configFiles}),
	}
}

// exitCode makes the CLI exit with a sandboxed command's own status.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func newLogger(g globals) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(g.LogLevel)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	format := g.LogFormat
	if format == "auto" {
		format = "json"
		if isatty.IsTerminal(os.Stderr.Fd()) {
			format = "console"
		}
	}
	var l zerolog.Logger
	if format == "console" {
		l = zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: "15:04:05.000"})
	} else {
		l = zerolog.New(stderr)
	}
	return l.Level(lvl).With().Timestamp().Logger()
}

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Println("sockfaas", version)
	return nil
}

type complCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

func (c complCmd) Run(kctx *kong.Context) error {
	return writeCompletion(os.Stdout, kctx.Model, c.Shell)
}
