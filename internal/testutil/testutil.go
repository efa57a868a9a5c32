// Package testutil holds what the project's tests share: the root check and
// unique names for system objects a test creates, so parallel test binaries
// never collide and debris is recognisable.
package testutil

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sockfaas/sockfaas/internal/mountinfo"
)

// RequiresRoot skips t unless the test runs as root. Root-only tests run in
// CI (which is root); elsewhere they skip with this message.
func RequiresRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root (namespaces, mounts, cgroups); CI runs it as root")
	}
}

// UniqueName returns prefix-<8 hex chars>, for cgroups, state directories and
// the like. Names start with "sockfaas-test-" so that leftovers are easy to
// recognise and `make clean-test` can remove them.
func UniqueName(tb testing.TB) string {
	tb.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return "sockfaas-test-" + hex.EncodeToString(b[:])
}

// StateDir makes a short, unique state directory under /run (Unix socket
// paths are limited to 108 bytes, so t.TempDir's long names do not fit) and
// removes it when the test ends.
func StateDir(tb testing.TB) string {
	tb.Helper()
	dir := "/run/" + UniqueName(tb)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		// A leaked mount under dir would make RemoveAll delete through it
		// into whatever it binds: report it, detach it, then remove.
		if leaked := MountsUnder(dir); len(leaked) > 0 {
			tb.Errorf("mounts left under %s: %v", dir, leaked)
			detach(leaked)
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

// MountsUnder lists the mount points at or below dir in this process's
// mount namespace, in mount order.
func MountsUnder(dir string) []string {
	m, _ := mountinfo.Under(dir)
	return m
}

// CheckNothingLeft reports, as test errors, mounts left under a state
// directory and cgroup directories left under the absolute cgroup path cg
// in any hierarchy.
func CheckNothingLeft(tb testing.TB, state, cg string) {
	tb.Helper()
	if m := MountsUnder(state); len(m) > 0 {
		tb.Errorf("mounts left: %v", m)
	}
	name := strings.TrimPrefix(cg, "/")
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	more, _ := filepath.Glob("/sys/fs/cgroup/" + name)
	if dirs = append(dirs, more...); len(dirs) > 0 {
		tb.Errorf("cgroups left: %v", dirs)
	}
}

// SyncBuffer is a bytes.Buffer that a test can read while a process or a
// logger writes it from another goroutine.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Reset empties the buffer.
func (b *SyncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}
