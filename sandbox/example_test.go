package sandbox_test

import (
	"errors"
	"fmt"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/sandbox"
)

// Specs are plain data, checked without touching the system; every error
// is tested against the package's small vocabulary with errors.Is.
func ExampleSpec_Validate() {
	spec := sandbox.Spec{
		Root:   fsbind.Spec{Binds: []fsbind.Bind{{Source: "/srv/code", Dest: "/code/../etc"}}},
		Limits: sandbox.Limits{MemoryBytes: 128 << 20},
	}
	err := spec.Validate()
	fmt.Println(errors.Is(err, sandbox.ErrInvalid))
	fmt.Println(sandbox.ValidateID("../escape") != nil)
	// Output:
	// true
	// true
}
