//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/go-units"
	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/sandbox/libct"
)

// Every CLI process that makes sandboxes owns its own state directory
// <state>/<backend>-<pid> and cgroup <cgroup>-<backend>-<pid>, so several
// can run at once; sweep removes those whose owner died.
func ownDirs(g *globals, backend string) (stateDir, cgroup string) {
	pid := strconv.Itoa(os.Getpid())
	return filepath.Join(g.StateDir, backend+"-"+pid), g.Cgroup + "-" + backend + "-" + pid
}

// sweep cleans every per-process state directory whose owner is gone.
// Live owners hold a lock and are skipped.
func sweep(ctx context.Context, g *globals, log zerolog.Logger) (int, error) {
	var n int
	var errs []error
	for _, backend := range []string{"lean", "libct"} {
		dirs, _ := filepath.Glob(filepath.Join(g.StateDir, backend+"-*"))
		for _, dir := range dirs {
			pid := strings.TrimPrefix(filepath.Base(dir), backend+"-")
			if owner, err := strconv.Atoi(pid); err != nil || processAlive(owner) {
				continue // not ours, or its owner runs (and may not have locked it yet)
			}
			var err error
			if backend == "lean" {
				err = lean.Cleanup(ctx, dir, g.Cgroup+"-lean-"+pid, log)
			} else {
				err = libct.Cleanup(ctx, dir, log)
			}
			switch {
			case errors.Is(err, sandbox.ErrBusy):
				continue
			case err != nil:
				errs = append(errs, fmt.Errorf("%s: %w", dir, err))
			default:
				n++
				log.Info().Str("state", dir).Msg("cleaned up after a crashed sockfaas")
			}
		}
	}
	// Library users on the defaults (lean.DefaultStateDir and
	// lean.DefaultCgroupName live here when --state-dir is /run/sockfaas).
	for _, d := range []struct {
		dir   string
		clean func(string) error
	}{
		{filepath.Join(g.StateDir, "lean"), func(dir string) error { return lean.Cleanup(ctx, dir, g.Cgroup, log) }},
		{filepath.Join(g.StateDir, "libct"), func(dir string) error { return libct.Cleanup(ctx, dir, log) }},
	} {
		if _, err := os.Stat(d.dir); err != nil {
			continue
		}
		switch err := d.clean(d.dir); {
		case errors.Is(err, sandbox.ErrBusy):
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", d.dir, err))
		default:
			n++
			log.Info().Str("state", d.dir).Msg("cleaned up after a crashed sockfaas")
		}
	}
	_ = os.Remove(g.StateDir) // only if empty
	return n, errors.Join(errs...)
}

func newBackend(ctx context.Context, g *globals, log zerolog.Logger, name string) (sandbox.Backend, error) {
	if _, err := sweep(ctx, g, log); err != nil {
		log.Warn().Err(err).Msg("cleanup of earlier runs was incomplete")
	}
	switch name {
	case "lean":
		dir, cg := ownDirs(g, "lean")
		return lean.New(ctx, lean.WithStateDir(dir), lean.WithCgroupName(cg), lean.WithPoolSize(2), lean.WithLogger(log))
	case "libcontainer":
		dir, cg := ownDirs(g, "libct")
		return libct.New(ctx, libct.WithStateDir(dir), libct.WithCgroupParent(cg), libct.WithLogger(log))
	}
	return nil, fmt.Errorf("unknown backend %q (lean or libcontainer): %w", name, sandbox.ErrInvalid)
}

type sandboxFlags struct {
	Backend  string   `help:"lean (SOCK-style, default) or libcontainer (full isolation)." default:"lean" enum:"lean,libcontainer"`
	Rootfs   string   `help:"Root file system directory; default: the host's /usr, /lib*, /bin, /sbin and a minimal /etc." type:"existingdir"`
	Bind     []string `help:"Extra bind mount SRC:DST[:rw] (read-only unless :rw). Repeatable." placeholder:"SRC:DST[:rw]"`
	Memory   string   `help:"Memory limit, e.g. 256M." placeholder:"SIZE"`
	CPUs     float64  `help:"CPU limit in CPUs, e.g. 0.5."`
	Pids     int64    `help:"Maximum number of tasks."`
	Hostname string   `help:"Hostname inside the sandbox (default: the sandbox ID)."`
	Network  string   `help:"none (loopback only), host, shared (a NAT'd namespace behind a bridge) or isolated (one made for this sandbox)." default:"none" enum:"none,host,shared,isolated"`
	Publish  []string `help:"Publish a container port on the host: [HOSTIP:]HOSTPORT:CONTAINERPORT[/udp] (HOSTIP defaults to 127.0.0.1; needs --network shared or isolated). Repeatable." short:"p"`
}

func (f sandboxFlags) spec() (sandbox.Spec, error) {
	spec := sandbox.Spec{
		Root:       fsbind.Spec{Base: f.Rootfs},
		Namespaces: sandbox.DefaultNamespaces,
		Hostname:   f.Hostname,
		Limits:     sandbox.Limits{CPUMillis: int64(f.CPUs * 1000), Pids: f.Pids},
	}
	if f.Memory != "" {
		n, err := units.RAMInBytes(f.Memory)
		if err != nil {
			return spec, fmt.Errorf("--memory %q: %w", f.Memory, sandbox.ErrInvalid)
		}
		spec.Limits.MemoryBytes = n
	}
	for _, b := range f.Bind {
		parts := strings.Split(b, ":")
		if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "rw" && parts[2] != "ro") {
			return spec, fmt.Errorf("--bind %q: want SRC:DST[:rw]: %w", b, sandbox.ErrInvalid)
		}
		src, err := filepath.Abs(parts[0])
		if err != nil {
			return spec, err
		}
		spec.Root.Binds = append(spec.Root.Binds, fsbind.Bind{Source: src, Dest: parts[1], Writable: len(parts) == 3 && parts[2] == "rw"})
	}
	return spec, spec.Validate()
}

type sandboxRunCmd struct {
	sandboxFlags
	User string   `help:"UID[:GID] to run as (default 65534:65534, nobody)." placeholder:"UID[:GID]"`
	Dir  string   `help:"Working directory inside the sandbox." default:"/"`
	Env  []string `help:"Environment variable KEY=VALUE. Repeatable; default a minimal PATH and HOME." short:"e"`
	Init bool     `help:"Run an init as PID 1 that forwards signals and reaps orphans, with the command as its child (lean backend; default: the command is PID 1, as with runc and crun)."`
	Args []string `arg:"" passthrough:"" help:"Command and arguments."`
}

func (c *sandboxRunCmd) Run(ctx context.Context, g *globals, log zerolog.Logger) (err error) {
	if len(c.Args) > 0 && c.Args[0] == "--" {
		c.Args = c.Args[1:]
	}
	if len(c.Args) == 0 {
		return fmt.Errorf("no command given: %w", sandbox.ErrInvalid)
	}
	spec, err := c.spec()
	if err != nil {
		return err
	}
	user, err := parseUser(c.User)
	if err != nil {
		return err
	}
	release, err := attachNetwork(ctx, g, log, c.Network, c.Publish, &spec)
	if err != nil {
		return err
	}
	defer release()
	be, err := newBackend(ctx, g, log, c.Backend)
	if err != nil {
		return err
	}
	// Destroy with a fresh context: an interrupted run still cleans up.
	defer func() {
		if cerr := be.Close(context.Background()); cerr != nil && err == nil {
			err = cerr
		}
	}()
	id := fmt.Sprintf("run-%d", os.Getpid())
	sb, err := be.Create(ctx, id, spec)
	if err != nil {
		return err
	}
	p, err := sb.Start(ctx, sandbox.ProcessSpec{
		Args: c.Args, Env: c.Env, Dir: c.Dir, User: user, Init: c.Init,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
	})
	if err != nil {
		return err
	}
	st, err := p.Wait(ctx)
	if err != nil { // interrupted: the deferred Close kills the command
		log.Info().Msg("interrupted: destroying the sandbox")
		return exitCode(130)
	}
	switch {
	case st.OOMKilled:
		log.Error().Msg("the command was killed: out of memory (raise --memory)")
		return exitCode(137)
	case st.Signal != 0:
		log.Warn().Str("signal", st.Signal.String()).Msg("the command was killed by a signal")
		return exitCode(128 + int(st.Signal))
	case st.Code != 0:
		return exitCode(st.Code)
	}
	return nil
}

func parseUser(s string) (*sandbox.User, error) {
	if s == "" {
		return nil, nil
	}
	uid, gid, hasGID := strings.Cut(s, ":")
	u, err := strconv.ParseUint(uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("--user %q: want numeric UID[:GID]: %w", s, sandbox.ErrInvalid)
	}
	g := u
	if hasGID {
		if g, err = strconv.ParseUint(gid, 10, 32); err != nil {
			return nil, fmt.Errorf("--user %q: want numeric UID[:GID]: %w", s, sandbox.ErrInvalid)
		}
	}
	return &sandbox.User{UID: uint32(u), GID: uint32(g)}, nil
}

type cleanupCmd struct{}

func (cleanupCmd) Run(ctx context.Context, g *globals, log zerolog.Logger) error {
	n, err := sweep(ctx, g, log)
	m, nerr := sweepNetworks(ctx, g, log)
	n += m
	err = errors.Join(err, nerr)
	fmt.Printf("cleaned up %d state director%s left by crashed runs\n", n, map[bool]string{true: "y", false: "ies"}[n == 1])
	return err
}

func since(t time.Time) string {
	return fmt.Sprintf("%.2f ms", float64(time.Since(t).Microseconds())/1000)
}

// processAlive is true while pid exists (zombies included).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
