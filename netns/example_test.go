package netns_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"os"

	"github.com/sockfaas/sockfaas/netns"
)

// A server builds its network once, then attaches each new sandbox to a
// shared slot and hands the sandbox's init an fd of the namespace to join.
func ExampleManager() {
	ctx := context.Background()
	m, err := netns.New(ctx, netns.Config{
		Subnet: netip.MustParsePrefix("10.213.0.0/16"),
		Egress: true, // sandboxes may reach the outside; turns on ip_forward
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close(ctx)

	a, err := m.Attach(ctx, netns.ModeShared, []netns.PortSpec{{ContainerPort: 8080}})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Release(ctx) // after the sandbox's processes are gone

	// The sandbox layer passes this fd to the process that becomes the
	// sandbox's init, which calls setns(fd, CLONE_NEWNET) first thing.
	ns, err := os.Open(a.NSPath())
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()

	p := a.Ports()[0]
	fmt.Printf("sandbox at %s; clients connect to %s, the handler listens on port %d\n",
		a.Addr(), p.Host, p.Sandbox.Port())
}

func ExampleParseMode() {
	for _, s := range []string{"", "none", "isolated", "bridge"} {
		mode, err := netns.ParseMode(s)
		fmt.Printf("%q: %q %v\n", s, mode, err)
	}
	// Output:
	// "": "shared" <nil>
	// "none": "none" <nil>
	// "isolated": "isolated" <nil>
	// "bridge": "" network mode "bridge": want none, shared, isolated or host: invalid argument
}
