package natsgw_test

import (
	"context"
	"fmt"
	"log"

	"github.com/sockfaas/sockfaas/invoker"
	"github.com/sockfaas/sockfaas/invoker/natsgw"
	"github.com/sockfaas/sockfaas/invoker/natsgw/embedded"
)

// Two hosts on one machine: an embedded NATS server, and an invoker on each
// "host" with a gateway as its upstream. A call on host A for a function
// deployed only on host B runs on B. (It needs root, like every invoker,
// so it is compiled but not run by go test.)
func Example() {
	ctx := context.Background()
	srv, err := embedded.Start(ctx, embedded.Config{Listen: "127.0.0.1:4222", StoreDir: "/var/lib/sockfaas/nats"})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()

	host := func(id, state string) (*invoker.Invoker, *natsgw.Gateway) {
		gw, err := natsgw.New(ctx, natsgw.Config{URL: srv.URL(), HostID: id})
		if err != nil {
			log.Fatal(err)
		}
		iv, err := invoker.New(ctx, invoker.WithUpstream(gw),
			invoker.WithStateDir(state), invoker.WithRegistryDir(state+"-registry"), invoker.WithCgroupName("/"+id))
		if err != nil {
			log.Fatal(err)
		}
		return iv, gw
	}
	a, gwA := host("host-a", "/run/sockfaas-a")
	b, gwB := host("host-b", "/run/sockfaas-b")
	// Close each invoker before its gateway.
	defer func() { _ = gwA.Close(ctx) }()
	defer func() { _ = a.Close(ctx) }()
	defer func() { _ = gwB.Close(ctx) }()
	defer func() { _ = b.Close(ctx) }()

	if _, err := b.Deploy(ctx, "hello", invoker.FromDir("/srv/functions/hello")); err != nil {
		log.Fatal(err)
	}
	// Within a heartbeat (natsgw.DefaultHeartbeat), host A knows host B
	// serves hello.
	res, err := a.Invoke(ctx, "hello", []byte(`{"name":"you"}`), invoker.InvokeOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", res.Payload)
}
