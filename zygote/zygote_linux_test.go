package zygote_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sockfaas/sockfaas/internal/testutil"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/sandbox/sandboxtest"
	"github.com/sockfaas/sockfaas/zygote"
)

func newLean(t testing.TB) *lean.Backend {
	t.Helper()
	b, err := lean.New(context.Background(), lean.WithStateDir(testutil.StateDir(t)), lean.WithCgroupName("/"+testutil.UniqueName(t)), lean.WithPoolSize(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

func runtimeDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := zygote.WriteRuntime(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func startZygote(t testing.TB, be *lean.Backend, packages ...string) *zygote.Zygote {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	z, err := zygote.Start(ctx, be, zygote.Config{ID: "zyg-" + strings.Join(packages, "-"), Packages: packages, RuntimeDir: runtimeDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = z.Close(context.Background()) })
	return z
}

func newSandbox(t testing.TB, be *lean.Backend, spec sandbox.Spec) *lean.Sandbox {
	t.Helper()
	sb, err := be.Create(context.Background(), testutil.UniqueName(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Destroy(context.Background()) })
	return sb.(*lean.Sandbox)
}

func TestConformance(t *testing.T) {
	testutil.RequiresRoot(t)
	rt := runtimeDir(t)
	sandboxtest.Run(t, func(t *testing.T) sandbox.Backend {
		lb, err := lean.New(context.Background(), lean.WithStateDir(testutil.StateDir(t)), lean.WithCgroupName("/"+testutil.UniqueName(t)), lean.WithPoolSize(4))
		if err != nil {
			t.Fatal(err)
		}
		b, err := zygote.NewBackend(context.Background(), lb, zygote.Config{RuntimeDir: rt})
		if err != nil {
			_ = lb.Close(context.Background())
			t.Fatal(err)
		}
		return b
	})
}
