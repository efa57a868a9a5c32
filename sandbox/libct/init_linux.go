package libct

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's cgo constructor does the namespace work of "init" before the
	// Go runtime starts; without it libcontainer cannot start containers.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	// Registers the device-cgroup writers the cgroup managers need to apply
	// the sandbox's device allow-list.
	_ "github.com/opencontainers/cgroups/devices"
)

// Init must run at the very start of main (or TestMain) in every program
// that uses this backend. When the binary was re-executed by libcontainer
// as "<argv0> init" it becomes the container's init and never returns;
// otherwise it returns immediately.
func Init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // does not return
	}
}
