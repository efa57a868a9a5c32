package invoker_test

import (
	"context"
	"fmt"
	"log"

	"github.com/sockfaas/sockfaas/invoker"
)

// Example starts an invoker, deploys a function from a directory and
// invokes it. It needs root (namespaces, mounts, cgroups), so it is
// compiled but not run by go test.
func Example() {
	ctx := context.Background()
	iv, err := invoker.New(ctx,
		invoker.WithStateDir("/run/sockfaas-example"),
		invoker.WithRegistryDir("/var/lib/sockfaas-example"),
		invoker.WithZygotes([][]string{{"numpy"}}),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer iv.Close(ctx)

	// A directory with lambda_function.py defining lambda_handler(event,
	// context), and optionally sockfaas.yaml and requirements.txt.
	if _, err := iv.Deploy(ctx, "hello", invoker.FromDir("testdata/hello")); err != nil {
		log.Fatal(err)
	}
	res, err := iv.Invoke(ctx, "hello", []byte(`{"name": "sockfaas"}`), invoker.InvokeOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s (%s start)\n", res.Payload, res.Start)
}
