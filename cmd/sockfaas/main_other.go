//go:build !linux

// Command sockfaas is the sockfaas CLI. Sandboxes need Linux (namespaces,
// cgroups, mount plumbing); elsewhere the command only says so.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Fprintln(os.Stderr, "sockfaas: sandboxes need Linux (namespaces, cgroups, bind mounts); this build is for", runtime.GOOS)
	os.Exit(1)
}
