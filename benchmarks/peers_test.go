//go:build linux

package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"github.com/sockfaas/sockfaas/benchmarks/peers"
)

// peerRuntimes are the OCI runtimes compared against, by CLI name.
var peerRuntimes = []string{"crun", "runc"}

// newPeer finds an OCI runtime and builds a bundle for it; ok is false (and
// the benchmark skipped with a message) when the runtime is not installed.
func newPeer(b *testing.B, name string) (*peers.Runtime, *peers.Bundle) {
	rt, err := peers.Find(name)
	if errors.Is(err, peers.ErrNotInstalled) {
		b.Skipf("skipping %s: %v", name, err)
	}
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(stateDir(b), "bundle")
	bundle, err := peers.NewBundle(dir, peers.BundleOptions{CgroupParent: "/" + benchName(b)})
	if err != nil {
		_ = rt.Close()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := peers.Cleanup(context.Background(), bundle, rt); err != nil {
			b.Error(err)
		}
		_ = rt.Close()
	})
	return rt, bundle
}

// benchPeers adds one sub-benchmark per OCI runtime: `<rt> run` of
// /bin/true on the harness's bundle, which the runtime deletes afterwards.
func benchPeers(b *testing.B, workers int) {
	ctx := context.Background()
	for _, name := range peerRuntimes {
		label := name
		if workers > 1 {
			label = fmt.Sprintf("%s-parallel-%d", name, workers)
		}
		b.Run(label, func(b *testing.B) {
			rt, bundle := newPeer(b, name)
			timed(b, workers, func(i int) error {
				return rt.Run(ctx, bundle, fmt.Sprintf("b%d", i), []string{"/bin/true"}, io.Discard, io.Discard)
			}).report(b)
		})
	}
}
