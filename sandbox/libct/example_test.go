package libct_test

import (
	"context"
	"fmt"
	"os"

	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/libct"
)

// A program that uses the backend calls Init before anything else in main:
// libcontainer re-executes the binary as "<argv0> init" to become each
// container's init.
func Example() {
	libct.Init() // first line of main; never returns in the re-executed init

	ctx := context.Background()
	b, err := libct.New(ctx, libct.WithStateDir("/run/myapp/libct"), libct.WithCgroupParent("/myapp"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer b.Close(ctx)

	s, err := b.Create(ctx, "hello", sandbox.Spec{Limits: sandbox.Limits{MemoryBytes: 64 << 20}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer s.Destroy(ctx)

	p, err := s.Start(ctx, sandbox.ProcessSpec{Args: []string{"/bin/echo", "hi"}, Stdout: os.Stdout})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	st, _ := p.Wait(ctx)
	fmt.Println("exit code", st.Code)
}
