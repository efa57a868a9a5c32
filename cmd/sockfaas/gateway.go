//go:build linux

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/invoker"
	"github.com/sockfaas/sockfaas/invoker/natsgw"
	"github.com/sockfaas/sockfaas/invoker/natsgw/embedded"
)

// defaultNATSStore keeps the embedded NATS server's JetStream store beside
// the registry, not in the state directory that `run` removes on exit:
// events queued there, and not yet run, outlive a restart.
const defaultNATSStore = "/var/lib/sockfaas/nats"

// gatewayFlags are run's flags for the upstream gateway (issue 6): a host
// alone, a host of an existing NATS cluster, or a host that runs the NATS
// server of a one-machine cluster in its own process.
type gatewayFlags struct {
	Gateway    string `help:"How this host reaches the others: none (one host alone, the default), embedded (run a NATS server in this process and use it), or the NATS servers of the cluster to join, nats://HOST:PORT[,nats://HOST:PORT...]." default:"none" env:"SOCKFAAS_GATEWAY" placeholder:"none|embedded|URL"`
	NatsListen string `help:"With --gateway embedded: the NATS server's address. It has no authentication: keep it on loopback unless the network is trusted." default:"${nats_listen}" env:"SOCKFAAS_NATS_LISTEN"`
	NatsStore  string `help:"With --gateway embedded: the NATS server's store; queued events wait there across restarts." default:"${nats_store}" env:"SOCKFAAS_NATS_STORE" type:"path"`
	NatsCreds  string `help:"With --gateway URL: a NATS credentials file (user JWT and NKey seed). A user:password@ or token@ in the URL works too; pass such a URL in SOCKFAAS_GATEWAY or the config file, where ps does not show it." env:"SOCKFAAS_NATS_CREDS" type:"path" placeholder:"FILE"`
	NatsPrefix string `help:"Subject prefix: the hosts with the same one form a cluster." default:"${nats_prefix}" env:"SOCKFAAS_NATS_PREFIX"`
	HostID     string `help:"This host's name among the others: letters, digits, - and _ (default: the host name and a random suffix, new each run)." env:"SOCKFAAS_HOST_ID" placeholder:"ID"`
}

type gatewayMode int

const (
	gatewayNone     gatewayMode = iota // one host alone
	gatewayJoin                        // an existing NATS cluster
	gatewayEmbedded                    // a NATS server in this process
)

// gatewayPlan is the gateway configuration, checked, before anything is
// started.
type gatewayPlan struct {
	mode   gatewayMode
	listen string // gatewayEmbedded: the server's address
	store  string // gatewayEmbedded: its JetStream store
	cfg    natsgw.Config
}

// gatewayHint is what a --gateway value should look like.
const gatewayHint = "--gateway takes none, embedded, or nats://HOST:PORT[,nats://HOST:PORT...]"

// plan checks the flags; it starts nothing, so bad input fails before
// anything exists that would need undoing.
func (f gatewayFlags) plan(args []string, log zerolog.Logger) (gatewayPlan, error) {
	p := gatewayPlan{cfg: natsgw.Config{Prefix: f.NatsPrefix, HostID: f.HostID, Logger: log}}
	switch v := strings.TrimSpace(f.Gateway); strings.ToLower(v) {
	case "", "none":
		return p, nil
	case "embedded":
		p.mode = gatewayEmbedded
	default:
		urls, err := parseNATSURLs(v)
		if err != nil {
			return p, err
		}
		p.mode, p.cfg.URL = gatewayJoin, urls
		if natsgw.Redact(urls) != urls && slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, urls) }) {
			log.Warn().Str("server", natsgw.Redact(urls)).Msg("--gateway has a password or token in its URL, which ps shows to every user: pass the URL in SOCKFAAS_GATEWAY or the config file, or use --nats-creds")
		}
	}
	if !natsgw.ValidToken(f.NatsPrefix) {
		return p, fmt.Errorf("--nats-prefix %q: want 1-64 letters, digits, - and _", f.NatsPrefix)
	}
	if f.HostID != "" && !natsgw.ValidToken(f.HostID) {
		return p, fmt.Errorf("--host-id %q: want 1-64 letters, digits, - and _ (it names NATS subjects)", f.HostID)
	}
	if p.mode == gatewayJoin {
		if f.NatsCreds != "" {
			fi, err := os.Stat(f.NatsCreds)
			if err != nil {
				return p, fmt.Errorf("--nats-creds: %w", err)
			}
			if !fi.Mode().IsRegular() {
				return p, fmt.Errorf("--nats-creds %s: not a file", f.NatsCreds)
			}
			p.cfg.Options = append(p.cfg.Options, nats.UserCredentials(f.NatsCreds))
		}
		return p, nil
	}

	// embedded
	if f.NatsCreds != "" {
		return p, errors.New("--nats-creds is for joining a cluster (--gateway nats://...): the embedded NATS server has no authentication")
	}
	host, port, err := net.SplitHostPort(f.NatsListen)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		return p, fmt.Errorf("--nats-listen %q: want HOST:PORT, e.g. %s", f.NatsListen, embedded.DefaultListen)
	}
	if !isLoopback(host) {
		if host == "" {
			host = "every interface"
		}
		log.Warn().Str("nats_listen", f.NatsListen).
			Msgf("the embedded NATS server listens on %s, beyond this machine, and has no authentication: whoever reaches it can run code on every host of the cluster; keep --nats-listen on 127.0.0.1 unless the network is trusted", host)
	}
	if !filepath.IsAbs(f.NatsStore) {
		return p, fmt.Errorf("--nats-store %q: want an absolute path", f.NatsStore)
	}
	p.listen, p.store = f.NatsListen, f.NatsStore
	return p, nil
}

// parseNATSURLs checks a comma-separated list of NATS server URLs.
func parseNATSURLs(s string) (string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		u, err := url.Parse(part)
		if err != nil || !strings.Contains(part, "://") {
			hint := ""
			if _, _, err := net.SplitHostPort(part); err == nil {
				hint = " (nats://" + part + "?)"
			}
			return "", fmt.Errorf("--gateway %q: %q is not a URL%s; %s", natsgw.Redact(s), natsgw.Redact(part), hint, gatewayHint)
		}
		switch {
		case !slices.Contains([]string{"nats", "tls", "ws", "wss"}, u.Scheme):
			return "", fmt.Errorf("--gateway %q: scheme %q is not NATS's (nats://, tls://, ws://, wss://); %s", natsgw.Redact(s), u.Scheme, gatewayHint)
		case u.Hostname() == "":
			return "", fmt.Errorf("--gateway %q: no host in %q; %s", natsgw.Redact(s), natsgw.Redact(part), gatewayHint)
		case strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "":
			return "", fmt.Errorf("--gateway %q: a NATS URL has no path or query; %s", natsgw.Redact(s), gatewayHint)
		}
		if port := u.Port(); port != "" {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return "", fmt.Errorf("--gateway %q: port %q is not one; %s", natsgw.Redact(s), port, gatewayHint)
			}
		}
		out = append(out, part)
	}
	return strings.Join(out, ","), nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// upstream is a started gateway: the invoker's upstream, and the embedded
// server it uses when there is one. The zero value is the single host.
type upstream struct {
	gw     *natsgw.Gateway
	srv    *embedded.Server
	store  string
	prefix string
	server string // the NATS URL, secrets hidden
}

// connectTimeout bounds connecting to NATS and setting up the streams.
const connectTimeout = 30 * time.Second

// start starts the embedded server if the plan has one, then the gateway.
// On error nothing it started is left running.
func (p gatewayPlan) start(ctx context.Context, log zerolog.Logger) (_ *upstream, err error) {
	u := &upstream{}
	if p.mode == gatewayNone {
		return u, nil
	}
	defer func() {
		if err != nil {
			_ = u.close(context.Background(), log)
		}
	}()
	cfg := p.cfg
	u.prefix = cmp.Or(cfg.Prefix, natsgw.DefaultPrefix)
	if p.mode == gatewayEmbedded {
		if err := u.startEmbedded(ctx, p, log); err != nil {
			return nil, err
		}
		cfg.URL = u.srv.URL()
	}
	u.server = natsgw.Redact(cfg.URL)
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	u.gw, err = natsgw.New(cctx, cfg)
	if err != nil {
		return nil, gatewayError(natsgw.RedactError(err, cfg.URL), u.server, p.mode)
	}
	ev := log.Info().Str("host", u.gw.HostID()).Str("server", u.server)
	if p.mode == gatewayEmbedded {
		ev = ev.Str("gateway", "embedded").Str("nats_store", p.store)
	} else {
		ev = ev.Str("gateway", "nats")
	}
	ev.Msg("gateway ready: calls for functions not deployed here go to the other hosts")
	return u, nil
}

// startEmbedded starts the server, saying what to do when its port or
// store is taken.
func (u *upstream) startEmbedded(ctx context.Context, p gatewayPlan, log zerolog.Logger) (err error) {
	u.store = p.store
	u.srv, err = embedded.Start(ctx, embedded.Config{Listen: p.listen, StoreDir: p.store, Logger: log})
	switch {
	case errors.Is(err, unix.EADDRINUSE):
		return fmt.Errorf("--nats-listen %s: %w (another NATS server, or another `sockfaas run --gateway embedded`? join it with --gateway nats://%s, or pick another port)", p.listen, err, p.listen)
	case errors.Is(err, embedded.ErrStoreInUse):
		return fmt.Errorf("--nats-store %s is in use by another `sockfaas run --gateway embedded`: join its server with --gateway nats://..., or give this one a --nats-store of its own", p.store)
	case err != nil:
		return fmt.Errorf("start the embedded NATS server: %w", err)
	}
	return nil
}

// gatewayError says what to do about a gateway that did not start.
func gatewayError(err error, server string, mode gatewayMode) error {
	switch {
	case errors.Is(err, nats.ErrAuthorization):
		return fmt.Errorf("--gateway %s: the NATS server refused this host's credentials (--nats-creds, or user:password@ in the URL): %w", server, err)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount), errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("--gateway %s: the NATS server has no JetStream, which queues the events (start it with -js): %w", server, err)
	case errors.Is(err, invoker.ErrUnavailable) && mode == gatewayJoin:
		return fmt.Errorf("--gateway %s: no NATS server answers there; start one (nats-server -js), check the address, or use --gateway embedded for hosts on one machine: %w", server, err)
	}
	return fmt.Errorf("start the gateway (%s): %w", server, err)
}

// describe is the banner's line about the gateway, "" for a single host.
func (u *upstream) describe() string {
	switch {
	case u.gw == nil:
		return ""
	case u.srv != nil:
		join := u.server
		if h, port, err := net.SplitHostPort(strings.TrimPrefix(join, "nats://")); err == nil {
			if ip, err := netip.ParseAddr(h); err == nil && ip.IsUnspecified() {
				join = "nats://THIS-HOST:" + port
			}
		}
		return fmt.Sprintf("gateway: embedded NATS server at %s, as host %s; other hosts join with --gateway %s", u.server, u.gw.HostID(), join)
	default:
		return fmt.Sprintf("gateway: NATS at %s, as host %s", u.server, u.gw.HostID())
	}
}

// close closes the gateway, then the embedded server: after the invoker's
// Close, which detaches the gateway first.
func (u *upstream) close(ctx context.Context, log zerolog.Logger) error {
	var errs []error
	if u.gw != nil {
		if err := u.gw.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close the gateway: %w", err))
		} else {
			log.Info().Str("host", u.gw.HostID()).Msg("gateway closed")
		}
		u.gw = nil
	}
	if u.srv != nil {
		u.reportUnfinished(ctx, log)
		u.srv.Shutdown()
		u.srv = nil
		log.Info().Str("nats_store", u.store).Msg("embedded NATS server stopped; hosts that joined it reconnect when it runs again")
	}
	return errors.Join(errs...)
}

// reportUnfinished says how many events the embedded server's store
// keeps as it stops: not lost, they wait there for the next run. It asks
// after the gateway's Close, which finishes deleting the copies of the
// events that are done.
func (u *upstream) reportUnfinished(ctx context.Context, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nc, err := nats.Connect(u.srv.URL(), nats.Name("sockfaas run: shutdown"), nats.MaxReconnects(0))
	if err != nil {
		log.Debug().Err(err).Msg("count the unfinished events")
		return
	}
	defer nc.Close()
	n, err := natsgw.Unfinished(ctx, nc, u.prefix)
	if err != nil {
		log.Debug().Err(err).Msg("count the unfinished events")
	}
	if n > 0 {
		log.Warn().Uint64("events", n).Str("nats_store", u.store).
			Msg("unfinished events stay in the embedded NATS server's store: they run once `sockfaas run --gateway embedded` runs again on the same --nats-store, with their functions deployed")
	}
}
