package sbinit_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sockfaas/sockfaas/sandbox/internal/sbinit"
)

// Runs a shell as nobody in a prepared root (a mount point holding /proc,
// /usr, ...), with its own mount, PID, IPC and UTS namespaces.
func Example() {
	l, err := sbinit.NewLauncher()
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	p, err := l.Start(context.Background(), sbinit.Config{
		Root:       "/run/sockfaas/sb1/root",
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
		Hostname:   "sb1",
		UID:        65534,
		GID:        65534,
		Args:       []string{"sh", "-c", "echo pid $$ on $(cat /proc/sys/kernel/hostname)"},
		Env:        []string{"PATH=/usr/bin:/bin"},
		Stdout:     os.Stdout,
		CgroupFD:   -1,
	})
	if err != nil {
		log.Fatal(err) // e.g. sandbox init: pivot_root: invalid argument
	}
	ws, err := p.Wait()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit", ws.ExitStatus())
}
