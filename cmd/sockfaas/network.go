//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/netns"
	"github.com/sockfaas/sockfaas/sandbox"
)

// netConfig is the network of a CLI process's own netns.Manager: a bridge,
// chains and state directory named after its pid, so that a crashed run's
// leftovers can be found and removed by the next one (sweepNetworks).
func netConfig(g *globals, pid int, log zerolog.Logger) netns.Config {
	hex := strconv.FormatInt(int64(pid), 16)
	return netns.Config{
		Bridge:      "sf" + hex,
		ChainPrefix: "SF" + strings.ToUpper(hex) + "-",
		StateDir:    filepath.Join(g.StateDir, "net-"+strconv.Itoa(pid)),
		Slots:       1,
		NonePool:    -1,
		Egress:      true,
		Logger:      log,
	}
}

// sweepNetworks removes what crashed CLI processes' network managers left.
func sweepNetworks(ctx context.Context, g *globals, log zerolog.Logger) (int, error) {
	dirs, _ := filepath.Glob(filepath.Join(g.StateDir, "net-*"))
	var n int
	var errs []error
	for _, dir := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "net-"))
		if err != nil || processAlive(pid) {
			continue
		}
		switch err := netns.Cleanup(ctx, netConfig(g, pid, log)); {
		case errors.Is(err, netns.ErrBusy):
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", dir, err))
		default:
			n++
		}
	}
	return n, errors.Join(errs...)
}

// attachNetwork gives a one-off sandbox its network. "none" and "host" need
// no manager; "shared" and "isolated" start one for this process (a bridge
// with NAT to the outside), closed by the returned func.
func attachNetwork(ctx context.Context, g *globals, log zerolog.Logger, mode string, publish []string, spec *sandbox.Spec) (func(), error) {
	noop := func() {}
	switch mode {
	case "host":
		if len(publish) > 0 {
			return noop, fmt.Errorf("--publish needs --network shared or isolated: %w", sandbox.ErrInvalid)
		}
		return noop, nil
	case "none":
		if len(publish) > 0 {
			return noop, fmt.Errorf("--publish needs --network shared or isolated: %w", sandbox.ErrInvalid)
		}
		spec.Namespaces |= sandbox.NSNet
		return noop, nil
	}
	ports, err := parsePublish(publish)
	if err != nil {
		return noop, err
	}
	if _, err := sweepNetworks(ctx, g, log); err != nil {
		log.Warn().Err(err).Msg("cleanup of earlier networks was incomplete")
	}
	mgr, err := netns.New(ctx, netConfig(g, os.Getpid(), log))
	if err != nil {
		return noop, err
	}
	a, err := mgr.Attach(ctx, netns.Mode(mode), ports)
	if err != nil {
		_ = mgr.Close(context.Background())
		return noop, err
	}
	for _, p := range a.Ports() {
		fmt.Fprintf(os.Stderr, "sockfaas: %s %s -> sandbox %s\n", p.Proto, p.Host, p.Sandbox)
	}
	spec.NetNS = a.NSPath()
	return func() {
		_ = a.Release(context.Background())
		_ = mgr.Close(context.Background())
	}, nil
}

// parsePublish reads [HOSTIP:]HOSTPORT:CONTAINERPORT[/udp] flags.
func parsePublish(flags []string) ([]netns.PortSpec, error) {
	var out []netns.PortSpec
	for _, f := range flags {
		spec := netns.PortSpec{Proto: "tcp"}
		s := f
		if rest, proto, ok := strings.Cut(s, "/"); ok {
			s, spec.Proto = rest, proto
		}
		parts := strings.Split(s, ":")
		if len(parts) == 3 {
			ip, err := netip.ParseAddr(parts[0])
			if err != nil {
				return nil, fmt.Errorf("--publish %q: bad host address: %w", f, sandbox.ErrInvalid)
			}
			spec.HostIP, parts = ip, parts[1:]
		}
		if len(parts) != 2 {
			return nil, fmt.Errorf("--publish %q: want [HOSTIP:]HOSTPORT:CONTAINERPORT[/udp]: %w", f, sandbox.ErrInvalid)
		}
		var err1, err2 error
		spec.HostPort, err1 = strconv.Atoi(parts[0])
		spec.ContainerPort, err2 = strconv.Atoi(parts[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("--publish %q: ports must be numbers: %w", f, sandbox.ErrInvalid)
		}
		out = append(out, spec)
	}
	return out, nil
}
