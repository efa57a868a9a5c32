package zygote_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/lean"
	"github.com/sockfaas/sockfaas/zygote"
)

// A numpy zygote forks an instance of a Lambda-style handler into a new
// lean sandbox, and the handler is invoked over the instance's Unix socket.
// Needs root.
func Example() {
	ctx := context.Background()
	be, err := lean.New(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer be.Close(ctx)

	runtimeDir := "/run/sockfaas/runtime"
	if err := zygote.WriteRuntime(runtimeDir); err != nil {
		log.Fatal(err)
	}
	z, err := zygote.Start(ctx, be, zygote.Config{ID: "numpy", Packages: []string{"numpy"}, RuntimeDir: runtimeDir})
	if err != nil {
		log.Fatal(err)
	}
	defer z.Close(ctx)

	// The instance's sandbox: the function's code at /code, the runtime at
	// zygote.RuntimeDir, its own cgroup and limits.
	sbx, err := be.Create(ctx, "fn-1", sandbox.Spec{
		Root: fsbind.Spec{Binds: []fsbind.Bind{
			{Source: "/srv/functions/hello", Dest: "/code"},
			{Source: runtimeDir, Dest: zygote.RuntimeDir},
		}},
		Limits: sandbox.Limits{MemoryBytes: 128 << 20, Pids: 64},
	})
	if err != nil {
		log.Fatal(err)
	}
	sb := sbx.(*lean.Sandbox)
	defer sb.Destroy(ctx)
	// Every instance runs as a uid of its own (see UIDPool), which must be
	// able to write its scratch directory: the socket goes there.
	const uid = 200001
	if err := os.Chown(sb.Scratch(), uid, uid); err != nil {
		log.Fatal(err)
	}

	inst, err := z.Fork(ctx, sb, zygote.ForkRequest{
		Kind:     zygote.KindServe,
		UID:      uid,
		GID:      uid,
		Function: &zygote.Function{Socket: "/scratch/instance.sock", Dir: "/code", Name: "hello"},
	})
	if err != nil {
		log.Fatal(err)
	}
	c, err := zygote.Dial(ctx, filepath.Join(sb.Scratch(), "instance.sock"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	res, err := c.Invoke(ctx, zygote.InvokeRequest{Payload: []byte(`{"name": "zygote"}`)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(res.Payload), inst.Pid() > 0)
}
