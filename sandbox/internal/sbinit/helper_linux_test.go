package sbinit

import (
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// TestHelperUpToDate rebuilds the helper from csrc/sbinit.c and checks the
// embedded one is byte-identical, so nobody ships a stale blob. A different
// gcc may lay the code out differently: then the test skips, naming both.
func TestHelperUpToDate(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("only the amd64 helper is embedded")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not installed")
	}
	out := filepath.Join(t.TempDir(), "init.bin")
	cmd := exec.Command("sh", "build.sh", runtime.GOARCH, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	built, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(built, helper) {
		return
	}
	if was, now := compiler(t, helper), compiler(t, built); was != now {
		t.Skipf("embedded helper was built by %q, local gcc is %q: cannot compare", was, now)
	}
	t.Errorf("init_amd64.bin is stale (%d bytes; csrc/sbinit.c builds %d): run go generate", len(helper), len(built))
}

// compiler returns the .comment gcc leaves in an ELF file ("GCC: (...) 12.2.0").
func compiler(t *testing.T, bin []byte) string {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section(".comment")
	if s == nil {
		return ""
	}
	b, err := io.ReadAll(s.Open())
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimRight(b, "\x00"))
}

// TestHelperProtocol drives the helper directly, the way Start does, with
// arguments Start never sends.
func TestHelperProtocol(t *testing.T) {
	l := newLauncher(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"bogus=1", "--", "true"}, "arguments: 22"},
		{[]string{"uid=x", "--", "true"}, "arguments: 22"},
		{[]string{"uid=1"}, "arguments: 22"},
		{[]string{"--"}, "arguments: 22"},
		// A root without a mount namespace would pivot the host.
		{[]string{"root=/", "flags=0", "--", "true"}, "arguments: 22"},
	}
	for _, c := range cases {
		if got := runHelper(t, l, c.args, true); got != c.want {
			t.Errorf("%q: report %q, want %q", c.args, got, c.want)
		}
	}
	// No go byte (the Go side gave up): the helper does nothing at all.
	if got := runHelper(t, l, []string{"--", "/nosuch"}, false); got != "" {
		t.Errorf("without go: report %q, want none", got)
	}
}

func runHelper(t *testing.T, l *Launcher, args []string, goAhead bool) string {
	t.Helper()
	goR, goW, err := os.Pipe()
	must(t, err)
	errR, errW, err := os.Pipe()
	must(t, err)
	defer errR.Close()
	if goAhead {
		_, err = goW.Write([]byte{0})
		must(t, err)
	}
	goW.Close()
	cmd := l.helperCmd(append([]string{"sockfaas-init"}, args...), []*os.File{goR, errW, errW})
	must(t, cmd.Start())
	goR.Close()
	errW.Close()
	report, err := io.ReadAll(errR)
	must(t, err)
	if err := cmd.Wait(); err == nil || cmd.ProcessState.ExitCode() != 127 {
		t.Errorf("%q: helper status %v, want exit 127", args, cmd.ProcessState)
	}
	return string(report)
}
