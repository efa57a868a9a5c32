//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
)

// defaultEndpoint is where `sockfaas run` listens unless told otherwise, and
// where the client commands look for it.
const (
	defaultListen   = "127.0.0.1:8088"
	defaultEndpoint = "http://" + defaultListen
)

// clientFlags are the flags of every command that talks to a running
// `sockfaas run` over its HTTP API.
type clientFlags struct {
	Endpoint  string `help:"URL of the running 'sockfaas run'." default:"${endpoint}" env:"SOCKFAAS_ENDPOINT"`
	Token     string `help:"Bearer token of the invoker's API, if it has one (ps shows it: prefer --token-file or SOCKFAAS_TOKEN)." env:"SOCKFAAS_TOKEN"`
	TokenFile string `help:"File holding the bearer token (its first line)." env:"SOCKFAAS_TOKEN_FILE" type:"path" placeholder:"FILE"`
}

// readToken is the token given by --token, or else read from file
// (--token-file): its first line, trimmed. Both is an error.
func readToken(token, file string) (string, error) {
	if file == "" {
		return token, nil
	}
	if token != "" {
		return "", errors.New("--token and --token-file both given: pick one")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	if token = strings.TrimSpace(line); token == "" {
		return "", fmt.Errorf("--token-file %s: empty", file)
	}
	return token, nil
}

// apiClient calls the invoker's native HTTP API.
type apiClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

func (f clientFlags) client() (*apiClient, error) {
	raw := f.Endpoint
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw // "127.0.0.1:8088" is what people type
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("--endpoint %q: want a URL like %s", f.Endpoint, defaultEndpoint)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	// No overall timeout: invocations may run up to 15 minutes. Commands
	// bound their calls with the context.
	// Redirects are not followed: the token must go only where the user
	// pointed the CLI.
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	token, err := readToken(f.Token, f.TokenFile)
	if err != nil {
		return nil, err
	}
	return &apiClient{base: u, token: token, http: hc}, nil
}

// apiError is an error response of the API: its status and the message of
// its {"error": "..."} body.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status))
	}
	return e.Message
}

// notRunningError says that nothing answers at the endpoint.
type notRunningError struct {
	endpoint string
	err      error
}

func (e *notRunningError) Error() string {
	return fmt.Sprintf("no sockfaas run at %s: start one with `sockfaas run`", e.endpoint)
}

func (e *notRunningError) Unwrap() error { return e.err }

// response is a completed API call.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends one request to path (with its query) and reads the whole
// response. Error statuses come back as *apiError, a refused connection as
// *notRunningError.
func (c *apiClient) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*response, error) {
	u := *c.base
	p, q, _ := strings.Cut(path, "?")
	u.Path += p
	u.RawQuery = q
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if isNotListening(err) {
			return nil, &notRunningError{endpoint: c.base.Redacted(), err: err}
		}
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read the response of %s %s: %w", method, p, err)
	}
	r := &response{Status: resp.StatusCode, Header: resp.Header, Body: data}
	if resp.StatusCode >= 400 {
		return r, decodeAPIError(r)
	}
	return r, nil
}

func decodeAPIError(r *response) error {
	var body struct {
		Error string `json:"error"`
	}
	e := &apiError{Status: r.Status}
	if json.Unmarshal(r.Body, &body) == nil && body.Error != "" {
		e.Message = body.Error
	} else if s := strings.TrimSpace(string(r.Body)); s != "" && len(s) < 500 {
		e.Message = s
	}
	switch r.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		e.Message = strings.TrimSpace(e.Message + " (pass the invoker's token with --token or SOCKFAAS_TOKEN)")
	case http.StatusTooManyRequests:
		if ra := r.Header.Get("Retry-After"); ra != "" {
			e.Message += fmt.Sprintf(" (retry after %ss)", ra)
		}
	}
	return e
}

// isNotListening tells a connection that nothing accepts (refused, no such
// socket) from other network errors.
func isNotListening(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
