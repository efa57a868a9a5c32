//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/docker/go-units"
	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/examples"
	"github.com/sockfaas/sockfaas/invoker"
)

// runCmd is `sockfaas run`: the invoker and its HTTP APIs in the
// foreground, until SIGINT or SIGTERM, after which nothing it made is left.
type runCmd struct {
	Listen       string        `help:"Address of the HTTP API; a non-loopback address needs --token." default:"${listen}" env:"SOCKFAAS_LISTEN"`
	Token        string        `help:"Bearer token the API requires (Authorization: Bearer TOKEN); ps shows it: prefer --token-file or SOCKFAAS_TOKEN." env:"SOCKFAAS_TOKEN"`
	TokenFile    string        `help:"File holding the bearer token (its first line)." env:"SOCKFAAS_TOKEN_FILE" type:"path" placeholder:"FILE"`
	Examples     bool          `help:"Deploy the example functions (hello, numpy, aws-echo) built into this binary."`
	Deploy       []string      `help:"Deploy the function in DIR (named after it, or NAME=DIR) on start. Repeatable." placeholder:"[NAME=]DIR" sep:"none"`
	Zygote       []string      `help:"Warm a zygote with these packages imported on start, e.g. numpy or numpy,pandas. Repeatable." placeholder:"PKG[,PKG...]" sep:"none"`
	MemoryBudget string        `help:"Memory the instances may use together, e.g. 4G (default: half of the machine's)." placeholder:"SIZE"`
	NoNetwork    bool          `help:"No network manager: every instance is loopback-only whatever its manifest says (no bridge, no iptables)."`
	AllowHostNet bool          `name:"allow-host-network" help:"Allow functions whose manifest says network: host (they reach the host's loopback services and the metadata address)."`
	RegistryDir  string        `help:"Where deployed functions are kept across restarts." default:"${registry_dir}" env:"SOCKFAAS_REGISTRY_DIR" type:"path"`
	Generic      int           `help:"Ready generic sandboxes to keep for cold starts." default:"-1" hidden:""`
	Drain        time.Duration `help:"On SIGINT/SIGTERM, how long in-flight calls may finish before they are cut off." default:"10s"`

	gatewayFlags
}

// checkListen refuses to serve beyond this machine without a token.
func checkListen(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--listen %q: want HOST:PORT, e.g. %s", addr, defaultListen)
	}
	if token != "" || isLoopback(host) {
		return nil
	}
	if host == "" {
		host = "every interface"
	}
	return fmt.Errorf("--listen %s serves %s, beyond this machine, and the API runs code: set --token (or SOCKFAAS_TOKEN) to require a bearer token, or listen on 127.0.0.1", addr, host)
}

// startupFunction is one function deployed on start.
type startupFunction struct {
	name string
	src  func() (invoker.Source, error)
}

func (c *runCmd) functions() ([]startupFunction, error) {
	var fns []startupFunction
	if c.Examples {
		entries, err := fs.ReadDir(examples.FS, ".")
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			sub, err := fs.Sub(examples.FS, e.Name())
			if err != nil {
				return nil, err
			}
			fns = append(fns, startupFunction{name: e.Name(), src: func() (invoker.Source, error) {
				archive, err := packFS(sub)
				if err != nil {
					return nil, err
				}
				return invoker.FromArchive(bytes.NewReader(archive), 0), nil
			}})
		}
	}
	for _, d := range c.Deploy {
		name, dir, ok := strings.Cut(d, "=")
		if !ok {
			dir = d
			abs, err := filepath.Abs(dir)
			if err != nil {
				return nil, err
			}
			name = filepath.Base(abs)
		}
		if fi, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("--deploy %s: %w", d, err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("--deploy %s: not a directory", d)
		}
		fns = append(fns, startupFunction{name: name, src: func() (invoker.Source, error) { return invoker.FromDir(dir), nil }})
	}
	return fns, nil
}

func (c *runCmd) zygotes() [][]string {
	var sets [][]string
	for _, z := range c.Zygote {
		var set []string
		for _, p := range strings.Split(z, ",") {
			if p = strings.TrimSpace(p); p != "" {
				set = append(set, p)
			}
		}
		if len(set) > 0 {
			sets = append(sets, set)
		}
	}
	return sets
}

// options are the invoker's options; sets are the zygotes' package sets
// (c.zygotes).
func (c *runCmd) options(g *globals, log zerolog.Logger, sets [][]string) ([]invoker.Option, error) {
	opts := []invoker.Option{
		invoker.WithStateDir(g.StateDir),
		invoker.WithRegistryDir(c.RegistryDir),
		invoker.WithCgroupName(g.Cgroup),
		invoker.WithLogger(log),
	}
	if c.MemoryBudget != "" {
		n, err := units.RAMInBytes(c.MemoryBudget)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--memory-budget %q: want a size like 512M or 4G", c.MemoryBudget)
		}
		opts = append(opts, invoker.WithMemoryBudget(uint64(n)))
	}
	if len(sets) > 0 {
		opts = append(opts, invoker.WithZygotes(sets))
	}
	if c.AllowHostNet {
		opts = append(opts, invoker.WithRegistryOptions(invoker.WithHostNetwork(true)))
	}
	if c.NoNetwork {
		opts = append(opts, invoker.WithNetwork(nil))
	}
	if c.Generic >= 0 {
		opts = append(opts, invoker.WithGenericSandboxes(c.Generic))
	}
	return opts, nil
}

func (c *runCmd) Run(ctx context.Context, g *globals, log zerolog.Logger) (rerr error) {
	token, err := readToken(c.Token, c.TokenFile)
	if err != nil {
		return err
	}
	c.Token = token
	if err := checkListen(c.Listen, c.Token); err != nil {
		return err
	}
	fns, err := c.functions()
	if err != nil {
		return err
	}
	sets := c.zygotes()
	opts, err := c.options(g, log, sets)
	if err != nil {
		return err
	}
	plan, err := c.gatewayFlags.plan(os.Args[1:], log)
	if err != nil {
		return err
	}
	// Listen first: a taken port should fail before the slow start.
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.Listen, err)
	}
	defer ln.Close()

	// The gateway before the invoker, which attaches to it; closed after
	// the invoker (deferred earlier, so it runs later), then the embedded
	// server.
	up, err := plan.start(ctx, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting; start undid its work
		}
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := up.close(closeCtx, log); err != nil && rerr == nil {
			rerr = err
		}
	}()
	if up.gw != nil {
		opts = append(opts, invoker.WithUpstream(up.gw))
	}

	start := time.Now()
	msg := "starting the invoker"
	if len(sets) > 0 {
		msg += " (warming zygotes " + formatSets(sets) + ")"
	}
	sp := startSpinner(msg)
	defer sp.stop()
	inv, err := invoker.New(ctx, opts...)
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting; New undid its work
		}
		return fmt.Errorf("start the invoker: %w", err)
	}
	// From here on everything the invoker made is removed however Run
	// ends; Close needs a context of its own, ctx may be cancelled.
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		t0 := time.Now()
		if err := inv.Close(closeCtx); err != nil {
			if rerr == nil {
				rerr = fmt.Errorf("close the invoker: %w", err)
			}
			return
		}
		log.Info().Dur("dur", time.Since(t0)).Msg("invoker closed: nothing left behind")
	}()

	for i, fn := range fns {
		sp.set("deploying "+fn.name, i, len(fns))
		src, err := fn.src()
		if err == nil {
			_, err = inv.Deploy(ctx, fn.name, src)
		}
		if ctx.Err() != nil {
			return nil // interrupted while starting: clean up and exit
		}
		if err != nil {
			// One bad function (a missing package, say) should not keep
			// the others from being served.
			log.Error().Err(err).Str("func", fn.name).Msg("deploy on start failed; serving the others")
		}
	}
	sp.stop()
	if ctx.Err() != nil {
		return nil
	}

	hopts := []invoker.HTTPOption{invoker.WithHTTPLogger(log)}
	if c.Token != "" {
		hopts = append(hopts, invoker.WithToken(c.Token))
	}
	srv := &http.Server{
		Handler:           invoker.NewHandler(inv, hopts...),
		ReadHeaderTimeout: 10 * time.Second,
		// Idle keep-alive connections, authorised or not, are closed after
		// two minutes; request bodies have a deadline of their own (the
		// invoker's handler sets it). No read or write timeout here: a
		// synchronous invocation may legitimately run for 15 minutes.
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
	}
	// The banner goes first: the listener is bound, so a client that
	// reads it and connects at once waits in the backlog, not refused.
	all := names(inv.Functions())
	printBanner(endpointURL(ln.Addr()), c.Token != "", all, up.describe())
	log.Info().Str("listen", ln.Addr().String()).Strs("functions", all).Dur("dur", time.Since(start)).Msg("sockfaas run ready")
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	return c.shutdown(srv, log)
}

// shutdown stops accepting and lets in-flight calls finish for c.Drain; a
// second signal cuts the wait short. The deferred Close does the rest.
func (c *runCmd) shutdown(srv *http.Server, log zerolog.Logger) error {
	log.Info().Dur("drain", c.Drain).Msg("stopping: no new calls, waiting for those in flight (signal again to cut it short)")
	drainCtx, cancel := context.WithTimeout(context.Background(), c.Drain)
	defer cancel()
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	go func() {
		select {
		case <-again:
			log.Warn().Msg("second signal: not waiting for calls in flight")
			cancel()
		case <-drainCtx.Done():
		}
	}()
	t0 := time.Now()
	if err := srv.Shutdown(drainCtx); err != nil {
		log.Warn().Err(err).Dur("dur", time.Since(t0)).Msg("calls still in flight were cut off")
		_ = srv.Close()
	} else {
		log.Info().Dur("dur", time.Since(t0)).Msg("in-flight calls drained")
	}
	return nil
}

func names(fns []*invoker.Function) []string {
	out := make([]string, len(fns))
	for i, fn := range fns {
		out[i] = fn.Name
	}
	return out
}

func formatSets(sets [][]string) string {
	parts := make([]string, len(sets))
	for i, s := range sets {
		parts[i] = strings.Join(s, "+")
	}
	return strings.Join(parts, ", ")
}

// endpointURL is the URL a client on this machine uses for addr: a
// wildcard address is reached through loopback.
func endpointURL(addr net.Addr) string {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	ip := ap.Addr().Unmap()
	if ip.IsUnspecified() {
		ip = netip.MustParseAddr("127.0.0.1")
	}
	return "http://" + netip.AddrPortFrom(ip, ap.Port()).String()
}

// printBanner says where the API is and how to call it, in commands that
// can be pasted as they are, and which gateway this host uses (gateway,
// "" for none).
func printBanner(url string, withToken bool, all []string, gateway string) {
	fn, event := "NAME", `{}`
	switch {
	case slices.Contains(all, "hello"):
		fn, event = "hello", `{"name":"you"}`
	case len(all) > 0:
		fn = all[0]
	}
	auth, cliEnv := "", ""
	if withToken {
		auth = ` -H "Authorization: Bearer $SOCKFAAS_TOKEN"`
		cliEnv = "SOCKFAAS_TOKEN=... "
	}
	endpointFlag := ""
	if url != defaultEndpoint {
		endpointFlag = " --endpoint " + url
	}
	type call struct{ cmd, note string }
	calls := []call{
		{fmt.Sprintf("curl -s%s %s/v1/functions/%s/invoke -d '%s'", auth, url, fn, event), "native API"},
		{fmt.Sprintf("curl -s%s %s/2015-03-31/functions/%s/invocations -d '%s'", auth, url, fn, event), "AWS Lambda Invoke API"},
		{fmt.Sprintf("curl -s%s %s/run/%s -d '%s'", auth, url, fn, event), "OpenLambda"},
		{fmt.Sprintf("%ssockfaas invoke %s --data '%s'%s", cliEnv, fn, event, endpointFlag), "the CLI"},
	}
	if !withToken { // the aws CLI cannot send a bearer token
		calls = append(calls, call{fmt.Sprintf("aws lambda invoke --endpoint-url %s --function-name %s out.json", url, fn), "any AWS credentials and region will do"})
	}
	width := 0
	for _, c := range calls {
		width = max(width, len(c.cmd))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nsockfaas is running at %s   (Ctrl-C stops it and removes every sandbox it made)\n", url)
	if gateway != "" {
		fmt.Fprintln(&b, gateway)
	}
	if len(all) == 0 {
		fmt.Fprintf(&b, "no functions yet: sockfaas deploy NAME DIR%s\n", endpointFlag)
	} else {
		fmt.Fprintf(&b, "functions: %s\n", strings.Join(all, ", "))
	}
	fmt.Fprintf(&b, "\ncall %s:\n", fn)
	for _, c := range calls {
		fmt.Fprintf(&b, "  %-*s   # %s\n", width, c.cmd, c.note)
	}
	fmt.Fprintf(&b, "\nmore: sockfaas ls | ps | logs %s | deploy NAME DIR | rm NAME | doctor   (sockfaas --help)\n", fn)
	fmt.Print(b.String())
}
