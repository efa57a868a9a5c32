package lean_test

import (
	"bytes"
	"context"
	"fmt"
	"log"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
)

// A lean sandbox running a command with a memory and task limit, its code
// directory bound read-only at /code. Needs root.
func Example() {
	ctx := context.Background()
	be, err := lean.New(ctx) // owns /run/sockfaas/lean; cleans up after a crashed owner
	if err != nil {
		log.Fatal(err)
	}
	defer be.Close(ctx) // destroys every sandbox still alive

	sb, err := be.Create(ctx, "hello", sandbox.Spec{
		Root:   fsbind.Spec{Binds: []fsbind.Bind{{Source: "/srv/functions/hello", Dest: "/code"}}},
		Limits: sandbox.Limits{MemoryBytes: 64 << 20, Pids: 32},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Destroy(ctx)

	var out bytes.Buffer
	p, err := sb.Start(ctx, sandbox.ProcessSpec{
		Args:   []string{"/usr/bin/python3", "-c", "import socket; print(socket.gethostname())"},
		Stdout: &out,
	})
	if err != nil {
		log.Fatal(err)
	}
	st, err := p.Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s exit=%d oom=%v", out.String(), st.Code, st.OOMKilled)
}
