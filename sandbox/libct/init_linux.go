package libct

import (
	"os"
	"runtime"

	"github.com/opencontainers/runc/libcontainer"
	// nsenter's cgo constructor does the namespace work of "init" before the
	// Go runtime starts; without it libcontainer cannot start containers.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	// Registers the device-cgroup writers the cgroup managers need to apply
	// the sandbox's device allow-list.
	_ "github.com/opencontainers/cgroups/devices"
)

// The main goroutine keeps the main thread. libcontainer switches locked
// threads into container namespaces; a locked goroutine that exits on the
// main thread cannot take the thread with it (the main thread never
// exits), which would leave the process's thread-group leader, and so
// every /proc/self view, inside a dead container's namespaces.
func init() { runtime.LockOSThread() }

// Init must run at the very start of main (or TestMain) in every program
// that uses this backend. When the binary was re-executed by libcontainer
// as "<argv0> init" it becomes the container's init and never returns;
// otherwise it returns immediately.
func Init() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // does not return
	}
}
