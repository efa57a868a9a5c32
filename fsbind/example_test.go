package fsbind_test

import (
	"context"
	"fmt"
	"log"

	"github.com/sockfaas/sockfaas/fsbind"
)

// Build a root from the host's /usr and /lib*, with a function's code
// bound read-only at /code and a writable output directory. Needs root, so
// it is compiled but not run by go test.
func ExampleBuilder_Build() {
	ctx := context.Background()
	// One Builder per work directory; keep the path short, sockets live
	// under it.
	b, err := fsbind.NewBuilder(ctx, "/run/sockfaas/roots")
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close(ctx)

	r, err := b.Build(ctx, "hello-1", fsbind.Spec{
		Binds: []fsbind.Bind{
			{Source: "/srv/functions/hello", Dest: "/code"},
			{Source: "/srv/out/hello", Dest: "/out", Writable: true},
		},
		TmpSize: 16 << 20,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Teardown()

	// The process that enters r.Path, in its own mount and PID namespaces:
	// mount proc on <root>/proc, chdir there, pivot_root(".", "."), detach
	// the old root, chdir("/"), drop privileges, exec.
	fmt.Println("root:", r.Path, "scratch on the host:", r.Scratch)
}

// After a crash, clear what the previous process left before starting
// again (NewBuilder does this by itself for its own directory).
func ExampleCleanup() {
	if err := fsbind.Cleanup(context.Background(), "/run/sockfaas/roots"); err != nil {
		log.Fatal(err)
	}
}
