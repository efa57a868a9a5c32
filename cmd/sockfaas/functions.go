//go:build linux

package main

import (
	"archive/tar"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/docker/go-units"

	"github.com/sockfaas/sockfaas/invoker"
)

// The client commands: each is one or a few calls to the native API of a
// running `sockfaas run`.

type deployCmd struct {
	clientFlags
	Name string `arg:"" help:"Function name (letters, digits, - and _)."`
	Path string `arg:"" help:"A directory with the function's code, or a .tar.gz of it." type:"path"`
}

func (c *deployCmd) Run(ctx context.Context) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	archive, err := readCode(c.Path)
	if err != nil {
		return err
	}
	var sp *spinner
	if len(archive) > 1<<20 {
		sp = startSpinner(fmt.Sprintf("uploading %s (%s)", c.Name, units.HumanSize(float64(len(archive)))))
	}
	r, err := cl.do(ctx, http.MethodPut, "/v1/functions/"+url.PathEscape(c.Name), bytes.NewReader(archive), "application/gzip")
	sp.stop()
	if err != nil {
		return fmt.Errorf("deploy %s: %w", c.Name, err)
	}
	var fn invoker.FunctionInfo
	if json.Unmarshal(r.Body, &fn) == nil && fn.Name != "" {
		fmt.Printf("deployed %s version %d (%s)\n", fn.Name, fn.Version, fn.Handler)
		return nil
	}
	fmt.Printf("deployed %s\n", c.Name)
	return nil
}

// readCode returns the .tar.gz to upload for p: the file itself when it is
// one, the directory packed otherwise.
func readCode(p string) ([]byte, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
			return nil, fmt.Errorf("%s is neither a directory nor a .tar.gz archive", p)
		}
		return data, nil
	}
	return packDir(p)
}

// packDir packs the directory dir into a .tar.gz in memory. Everything is
// packed, hidden files included. Archives hold regular files and
// directories only, so a symlink that resolves inside dir is packed as
// what it points to; one that points outside (or nowhere) is refused, as
// are devices, FIFOs and sockets.
func packDir(dir string) ([]byte, error) {
	base, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	if base, err = filepath.Abs(base); err != nil {
		return nil, err
	}
	p := newPacker()
	if err := p.addDir(base, base, "", 0); err != nil {
		return nil, err
	}
	return p.finish()
}

// packFS packs an fs.FS (the embedded examples) the same way.
func packFS(fsys fs.FS) ([]byte, error) {
	p := newPacker()
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || name == "." {
			return err
		}
		if d.IsDir() {
			return p.dir(name)
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		return p.file(name, data, false)
	})
	if err != nil {
		return nil, err
	}
	return p.finish()
}

type packer struct {
	buf bytes.Buffer
	zw  *gzip.Writer
	tw  *tar.Writer
}

func newPacker() *packer {
	p := &packer{}
	p.zw = gzip.NewWriter(&p.buf)
	p.tw = tar.NewWriter(p.zw)
	return p
}

func (p *packer) dir(name string) error {
	return p.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: time.Unix(0, 0)})
}

func (p *packer) file(name string, data []byte, exec bool) error {
	mode := int64(0o644)
	if exec {
		mode = 0o755
	}
	if err := p.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	_, err := p.tw.Write(data)
	return err
}

// maxLinkDepth bounds directory symlinks followed within one another, which
// only a link cycle exceeds.
const maxLinkDepth = 16

// addDir packs the real directory src as name ("" for the archive's root);
// base is the directory being deployed, which links must stay within.
func (p *packer) addDir(base, src, name string, depth int) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		full := filepath.Join(src, e.Name())
		arcName := path.Join(name, e.Name())
		fi, err := os.Lstat(full)
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := filepath.EvalSymlinks(full)
			if err != nil {
				return fmt.Errorf("symlink %s does not resolve: %w", arcName, err)
			}
			if rel, err := filepath.Rel(base, target); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				return fmt.Errorf("symlink %s points outside %s, to %s: copy the file in instead", arcName, base, target)
			}
			if fi, err = os.Stat(target); err != nil {
				return err
			}
			if fi.IsDir() {
				if depth >= maxLinkDepth {
					return fmt.Errorf("symlink %s: too many directory links within one another (a cycle?)", arcName)
				}
				if err := p.dir(arcName); err != nil {
					return err
				}
				if err := p.addDir(base, target, arcName, depth+1); err != nil {
					return err
				}
				continue
			}
			full = target
		}
		switch mode := fi.Mode(); {
		case mode.IsDir():
			if err := p.dir(arcName); err != nil {
				return err
			}
			if err := p.addDir(base, full, arcName, depth); err != nil {
				return err
			}
		case mode.IsRegular():
			data, err := os.ReadFile(full)
			if err != nil {
				return err
			}
			if err := p.file(arcName, data, mode&0o111 != 0); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s is not a regular file, directory or symlink (%s): only those are deployed", arcName, mode.Type())
		}
	}
	return nil
}

func (p *packer) finish() ([]byte, error) {
	if err := p.tw.Close(); err != nil {
		return nil, err
	}
	if err := p.zw.Close(); err != nil {
		return nil, err
	}
	return p.buf.Bytes(), nil
}

type invokeCmd struct {
	clientFlags
	Name  string        `arg:"" help:"Function name."`
	Data  string        `short:"d" help:"The event: JSON, @FILE to read it from a file, or - for standard input." default:"{}"`
	Async bool          `help:"Queue the invocation and print its id (see --wait)."`
	Wait  bool          `help:"Queue the invocation, then poll until it is done and print its result (implies --async)."`
	Poll  time.Duration `help:"With --wait: how often to ask." default:"100ms" hidden:""`
}

func (c *invokeCmd) Run(ctx context.Context) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	payload, err := readPayload(c.Data)
	if err != nil {
		return err
	}
	p := "/v1/functions/" + url.PathEscape(c.Name) + "/invoke"
	if !c.Async && !c.Wait {
		r, err := cl.do(ctx, http.MethodPost, p, bytes.NewReader(payload), "application/json")
		if err != nil {
			return fmt.Errorf("invoke %s: %w", c.Name, err)
		}
		return printResult(r.Body, r.Header.Get("X-Sockfaas-Function-Error") != "")
	}
	r, err := cl.do(ctx, http.MethodPost, p+"?async=true", bytes.NewReader(payload), "application/json")
	if err != nil {
		return fmt.Errorf("invoke %s: %w", c.Name, err)
	}
	var queued struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(r.Body, &queued); err != nil || queued.ID == "" {
		return fmt.Errorf("invoke %s: unexpected response %q", c.Name, r.Body)
	}
	if !c.Wait {
		fmt.Println(queued.ID)
		return nil
	}
	fmt.Fprintln(stderr, "queued", queued.ID)
	return waitInvocation(ctx, cl, queued.ID, c.Poll)
}

// readPayload reads --data: JSON as given, @file, or - for stdin. It must
// be valid JSON, checked here for a clearer error than the server's.
func readPayload(arg string) ([]byte, error) {
	var data []byte
	var err error
	from := "--data"
	switch {
	case arg == "-":
		from = "standard input"
		data, err = io.ReadAll(os.Stdin)
	case strings.HasPrefix(arg, "@"):
		from = arg[1:]
		data, err = os.ReadFile(arg[1:])
	default:
		data = []byte(arg)
	}
	if err != nil {
		return nil, err
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		data = []byte("{}")
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("the event from %s is not valid JSON: %.80q", from, data)
	}
	return data, nil
}

// printResult prints an invocation's payload; a handler error makes the
// command exit 1 after printing the error JSON.
func printResult(payload []byte, functionError bool) error {
	os.Stdout.Write(bytes.TrimRight(payload, "\n"))
	fmt.Println()
	if functionError {
		return exitCode(1)
	}
	return nil
}

// waitInvocation polls GET /v1/invocations/{id}, which answers 202 while
// the invocation is queued or running, then like a synchronous invoke.
func waitInvocation(ctx context.Context, cl *apiClient, id string, poll time.Duration) error {
	sp := startSpinner("waiting for " + id)
	defer sp.stop()
	for {
		r, err := cl.do(ctx, http.MethodGet, "/v1/invocations/"+url.PathEscape(id), nil, "")
		if err != nil {
			return fmt.Errorf("invocation %s: %w", id, err)
		}
		if r.Status != http.StatusAccepted {
			sp.stop()
			return printResult(r.Body, r.Header.Get("X-Sockfaas-Function-Error") != "")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

type lsCmd struct {
	clientFlags
	JSON bool `help:"Print the API's JSON."`
}

func (c *lsCmd) Run(ctx context.Context) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	r, err := cl.do(ctx, http.MethodGet, "/v1/functions", nil, "")
	if err != nil {
		return err
	}
	if c.JSON {
		return printResult(r.Body, false)
	}
	var list invoker.FunctionList
	if err := json.Unmarshal(r.Body, &list); err != nil {
		return fmt.Errorf("GET /v1/functions: unexpected response: %w", err)
	}
	fns := list.Functions
	if len(fns) == 0 {
		fmt.Println("no functions deployed: sockfaas deploy NAME DIR")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tHANDLER\tSTYLE\tMEMORY\tTIMEOUT\tREQUIREMENTS\tDEPLOYED")
	for _, fn := range fns {
		reqs := strings.Join(fn.Requirements, ",")
		if reqs == "" {
			reqs = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%dM\t%ds\t%s\t%s\n", fn.Name, fn.Version, fn.Handler, fn.Style, fn.MemoryMB, fn.TimeoutSec, reqs, ago(fn.Created))
	}
	return tw.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return units.HumanDuration(time.Since(t)) + " ago"
}

type rmCmd struct {
	clientFlags
	Names []string `arg:"" name:"name" help:"Functions to remove."`
}

func (c *rmCmd) Run(ctx context.Context) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	for _, name := range c.Names {
		if _, err := cl.do(ctx, http.MethodDelete, "/v1/functions/"+url.PathEscape(name), nil, ""); err != nil {
			return fmt.Errorf("remove %s: %w", name, err)
		}
		fmt.Println("removed", name)
	}
	return nil
}

type psCmd struct {
	clientFlags
	JSON bool `help:"Print the API's JSON."`
}

func (c *psCmd) Run(ctx context.Context) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	r, err := cl.do(ctx, http.MethodGet, "/v1/status", nil, "")
	if err != nil {
		return err
	}
	if c.JSON {
		return printResult(r.Body, false)
	}
	var st invoker.StatusInfo
	if err := json.Unmarshal(r.Body, &st); err != nil {
		return fmt.Errorf("GET /v1/status: unexpected response: %w", err)
	}
	fmt.Printf("functions %d   instances %d   zygotes %d   generic sandboxes ready %d   memory %s\n\n",
		st.Functions, len(st.Instances), len(st.Zygotes), st.GenericCached, units.BytesSize(float64(st.MemoryBytes)))
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	if len(st.Instances) > 0 {
		fmt.Fprintln(tw, "INSTANCE\tFUNCTION\tVERSION\tPID\tSTATE\tMEMORY\tCALLS\tUP")
		for _, in := range st.Instances {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%d\t%s\n", in.ID, in.Function, in.Version, in.Pid, in.State,
				units.BytesSize(float64(in.MemoryBytes)), in.Invocations, upFor(in.Started))
		}
		fmt.Fprintln(tw)
	}
	if len(st.Zygotes) > 0 {
		fmt.Fprintln(tw, "ZYGOTE\tPARENT\tPACKAGES\tMEMORY\tFORKS")
		for _, z := range st.Zygotes {
			parent, pkgs := z.Parent, strings.Join(z.Packages, ",")
			if parent == "" {
				parent = "-"
			}
			if pkgs == "" {
				pkgs = "(none)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", z.ID, parent, pkgs, units.BytesSize(float64(z.MemoryBytes)), z.Forks)
		}
	}
	return tw.Flush()
}

func upFor(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}

type deadCmd struct {
	clientFlags
	JSON bool `help:"Print the API's JSON, payloads included."`
}

func (c *deadCmd) Run(ctx context.Context) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	r, err := cl.do(ctx, http.MethodGet, "/v1/dead-letters", nil, "")
	if err != nil {
		return err
	}
	if c.JSON {
		return printResult(r.Body, false)
	}
	var body invoker.DeadLetterList
	if err := json.Unmarshal(r.Body, &body); err != nil {
		return fmt.Errorf("GET /v1/dead-letters: unexpected response: %w", err)
	}
	if len(body.DeadLetters) == 0 {
		fmt.Println("no dead letters")
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tFUNCTION\tCALLER\tATTEMPTS\tQUEUED\tERROR")
	for _, d := range body.DeadLetters {
		caller := cmp.Or(d.Caller, "-")
		msg := d.Error
		if d.FunctionError {
			var fe struct {
				Type    string `json:"errorType"`
				Message string `json:"errorMessage"`
			}
			if json.Unmarshal([]byte(d.Error), &fe) == nil && fe.Type != "" {
				msg = fe.Type + ": " + fe.Message
			}
		}
		msg = strings.Join(strings.Fields(msg), " ")
		if len(msg) > 100 {
			msg = msg[:97] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Function, caller, d.Attempts, upFor(d.Queued)+" ago", msg)
	}
	return tw.Flush()
}

type logsCmd struct {
	clientFlags
	Name string `arg:"" help:"Function name."`
	Max  int    `help:"At most this many bytes, from the end." default:"65536"`
}

func (c *logsCmd) Run(ctx context.Context) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	r, err := cl.do(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(c.Name)+"/logs?max="+strconv.Itoa(c.Max), nil, "")
	if err != nil {
		return fmt.Errorf("logs of %s: %w", c.Name, err)
	}
	_, err = os.Stdout.Write(r.Body)
	return err
}
