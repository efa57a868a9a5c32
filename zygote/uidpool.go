package zygote

import (
	"fmt"
	"sync"

	"github.com/sockfaas/sockfaas/sandbox"
)

// Default uid range for instances: far above the host's own users and
// below the ranges container engines commonly hand to user namespaces.
const (
	DefaultUIDBase = 200000
	DefaultUIDs    = 65536
)

// UIDPool hands out distinct uids for instances (each also used as the
// instance's gid). Distinct uids are what keep zygote-forked instances
// apart without a PID namespace: with /proc mounted hidepid=invisible a
// process sees, and can signal, only processes of its own uid. It is safe
// for concurrent use.
type UIDPool struct {
	base, size uint32

	mu   sync.Mutex
	next uint32
	free []uint32
	used map[uint32]bool
}

// NewUIDPool returns a pool of size uids starting at base.
func NewUIDPool(base, size uint32) *UIDPool {
	return &UIDPool{base: base, size: size, used: map[uint32]bool{}}
}

// Get returns an unused uid, or ErrBusy when all are taken.
func (p *UIDPool) Get() (uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var uid uint32
	switch {
	case len(p.free) > 0:
		uid = p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
	case p.next < p.size:
		uid = p.base + p.next
		p.next++
	default:
		return 0, fmt.Errorf("all %d instance uids from %d are in use: %w", p.size, p.base, sandbox.ErrBusy)
	}
	p.used[uid] = true
	return uid, nil
}

// Put returns uid to the pool. The caller makes sure no process runs as it
// any more (destroying its sandbox does).
func (p *UIDPool) Put(uid uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used[uid] {
		delete(p.used, uid)
		p.free = append(p.free, uid)
	}
}
