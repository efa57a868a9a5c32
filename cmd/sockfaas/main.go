// Command sockfaas is the sockfaas CLI: lean sandboxes (and, as the project
// grows, zygotes, the invoker and its HTTP API) on one Linux machine.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/sandbox/libct"
)

// version is set by the linker: -ldflags "-X main.version=..."
var version = "dev"

type globals struct {
	LogLevel  string `help:"Log level: debug, info, warn, error (default: warn for one-shot commands, info for services)." enum:"debug,info,warn,error," default:"" env:"SOCKFAAS_LOG_LEVEL"`
	LogFormat string `help:"Log format: auto (console on a terminal, JSON otherwise), console, json." default:"auto" enum:"auto,console,json" env:"SOCKFAAS_LOG_FORMAT"`
	StateDir  string `help:"State directory (keep it short: Unix socket paths are limited to 108 bytes)." default:"/run/sockfaas" env:"SOCKFAAS_STATE_DIR"`
	Cgroup    string `help:"Absolute cgroup path for sockfaas's cgroups." default:"/sockfaas" env:"SOCKFAAS_CGROUP"`
}

type cli struct {
	globals

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
	kctx := kong.Parse(&c,
		kong.Name("sockfaas"),
		kong.Description("Fast lean sandboxes for serverless functions on one Linux machine."),
		kong.UsageOnError(),
		kong.Vars{"version": version},
	)
	if c.LogLevel == "" {
		c.LogLevel = "warn" // every command so far is one-shot
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
		l = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"})
	} else {
		l = zerolog.New(os.Stderr)
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
