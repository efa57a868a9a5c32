package sbinit

import (
	"context"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/internal/testutil"
)

// TestSeedNamespace: the seed mount namespace is made once, by a helper
// reaped before seedNS returns; it is a mount namespace other than ours;
// helpers entering roots share it; Close releases it.
func TestSeedNamespace(t *testing.T) {
	testutil.RequiresRoot(t)
	checkNoLeaks(t)
	l := newLauncher(t)
	ctx := context.Background()
	children := childPids(t)
	ns, err := l.seedNS(ctx)
	must(t, err)
	if now := childPids(t); !slices.Equal(now, children) {
		t.Errorf("children %v after seedNS, want %v: the seed helper was not reaped", now, children)
	}
	typ, err := unix.IoctlRetInt(int(ns.Fd()), unix.NS_GET_NSTYPE)
	must(t, err)
	if typ != unix.CLONE_NEWNS {
		t.Errorf("seed namespace type %#x, want CLONE_NEWNS", typ)
	}
	var seed, ours unix.Stat_t
	must(t, unix.Fstat(int(ns.Fd()), &seed))
	must(t, unix.Stat("/proc/self/ns/mnt", &ours))
	if seed.Ino == ours.Ino {
		t.Error("the seed is our own mount namespace")
	}

	root := minimalRoot(t)
	for range 3 {
		_, ws := run(t, l, sandboxConfig(root, "true"))
		wantExit(t, ws, 0)
	}
	if again, err := l.seedNS(ctx); err != nil || again != ns {
		t.Errorf("seedNS after starts: %v, %v; want the same namespace", again, err)
	}

	must(t, l.Close())
	if l.seed != nil {
		t.Error("Close kept the seed namespace")
	}
	if _, err := unix.IoctlRetInt(int(ns.Fd()), unix.NS_GET_NSTYPE); err == nil {
		t.Error("the seed namespace is still open after Close")
	}
}
