// Package embedded runs a NATS server with JetStream inside the process,
// for a sockfaas cluster of one machine (sockfaas run --gateway embedded)
// and for tests. For many machines, run nats-server itself and point the
// hosts at it.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/sockfaas/sockfaas/internal/statedir"
)

// Defaults of Config.
const (
	DefaultListen = "127.0.0.1:4222"
	// DefaultMaxPayload lets a message carry sockfaas's largest payload
	// (6 MiB, AWS Lambda's) with its headers; nats-server's own default
	// is 1 MiB.
	DefaultMaxPayload = 8 << 20
)

// Config configures an embedded server.
type Config struct {
	// Listen is the client address, host:port; port 0 picks a free one.
	// Default DefaultListen. The server has no authentication: keep it on
	// loopback unless the network around it is trusted.
	Listen string
	// StoreDir holds JetStream's streams; required. Events queued there
	// survive a restart of the server on the same directory.
	StoreDir string
	// MaxPayload is the largest message; default DefaultMaxPayload.
	MaxPayload int32
	// Name of the server; default "sockfaas".
	Name   string
	Logger zerolog.Logger
}

// ErrStoreInUse is wrapped by Start's error when another embedded server
// runs on the same StoreDir (nats-server itself does not check).
var ErrStoreInUse = errors.New("store directory in use")

// Server is a running embedded NATS server.
type Server struct {
	s    *server.Server
	lock *os.File // StoreDir's: one server per store
}

// Start starts a server and waits until it takes connections.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded nats: no store directory")
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.Name == "" {
		cfg.Name = "sockfaas"
	}
	host, ps, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded nats: listen port %q", ps)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	// nats-server only logs a failure to listen and then never becomes
	// ready: find out now, with the error that says why.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	_ = ln.Close()
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	lock, err := statedir.LockFile(filepath.Join(cfg.StoreDir, "sockfaas.lock"))
	if errors.Is(err, statedir.ErrLocked) {
		return nil, fmt.Errorf("embedded nats: %w: %s", ErrStoreInUse, cfg.StoreDir)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	s, err := server.NewServer(&server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		MaxPayload: cfg.MaxPayload,
		NoSigs:     true,
		// The default accepts up to 64 MiB pending per client; ample.
	})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	s.SetLoggerV2(logger{cfg.Logger.With().Str("component", "nats-server").Logger()}, false, false, false)
	go s.Start()
	deadline := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		deadline = time.Until(d)
	}
	if !s.ReadyForConnections(deadline) {
		s.Shutdown()
		s.WaitForShutdown()
		lock.Close()
		return nil, fmt.Errorf("embedded nats: not ready to take connections on %s within %v", cfg.Listen, deadline)
	}
	return &Server{s: s, lock: lock}, nil
}

// URL is the address clients connect to (nats://host:port).
func (s *Server) URL() string { return s.s.ClientURL() }

// Shutdown stops the server and waits until it has. It is idempotent.
func (s *Server) Shutdown() {
	s.s.Shutdown()
	s.s.WaitForShutdown()
	if s.lock != nil {
		_ = s.lock.Close() // and with it the flock
		s.lock = nil
	}
}

// logger forwards the server's log to zerolog: notices at debug level,
// warnings and errors as such.
type logger struct{ l zerolog.Logger }

func (l logger) Noticef(format string, v ...any) { l.l.Debug().Msgf(format, v...) }
func (l logger) Warnf(format string, v ...any)   { l.l.Warn().Msgf(format, v...) }
func (l logger) Fatalf(format string, v ...any)  { l.l.Error().Msgf(format, v...) }
func (l logger) Errorf(format string, v ...any)  { l.l.Error().Msgf(format, v...) }
func (l logger) Debugf(format string, v ...any)  { l.l.Trace().Msgf(format, v...) }
func (l logger) Tracef(format string, v ...any)  { l.l.Trace().Msgf(format, v...) }
