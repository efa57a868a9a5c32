package embedded

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestBusy: a taken port or a store another server uses fails at once,
// with an error that says which.
func TestBusy(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(context.Background(), Config{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if _, err := Start(context.Background(), Config{Listen: "127.0.0.1:0", StoreDir: dir}); !errors.Is(err, ErrStoreInUse) {
		t.Errorf("second server on the store: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	if _, err := Start(context.Background(), Config{Listen: ln.Addr().String(), StoreDir: t.TempDir()}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("taken port: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("failing on a taken port took %v", d)
	}
	s.Shutdown()
	s.Shutdown() // idempotent
	s2, err := Start(context.Background(), Config{Listen: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatalf("the store after the first server stopped: %v", err)
	}
	s2.Shutdown()
}
