// Package fsbind builds and tears down sandbox roots stitched from bind
// mounts: a read-only base, read-only packages and code, a private writable
// scratch directory, a size-limited /tmp, /dev and a /proc mount point.
//
// It is pure mount plumbing in the caller's mount namespace. It knows nothing
// of processes, namespaces or cgroups, and never writes into the directories
// it binds.
package fsbind
