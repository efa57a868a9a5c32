package peers_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/sockfaas/sockfaas/benchmarks/peers"
)

// Run a command in crun the way the harness does: find the runtime, build a
// bundle once, run as many containers in it as needed, clean up.
func Example() {
	ctx := context.Background()
	rt, err := peers.Find("crun")
	if errors.Is(err, peers.ErrNotInstalled) {
		log.Print(err) // says: apt-get install crun
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close()

	b, err := peers.NewBundle("/run/sockfaas-bench-example/bundle", peers.BundleOptions{
		CgroupParent: "/sockfaas-bench-example",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		if err := peers.Cleanup(ctx, b, rt); err != nil {
			log.Print(err)
		}
		_ = os.Remove("/run/sockfaas-bench-example")
	}()

	var out strings.Builder
	if err := rt.Run(ctx, b, "hello", []string{"/bin/echo", "hi"}, &out, os.Stderr); err != nil {
		log.Fatal(err)
	}
	fmt.Print(out.String())
}
