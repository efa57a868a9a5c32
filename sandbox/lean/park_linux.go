package lean

import (
	"context"
	"errors"
	"os"
	"strconv"
	"time"

	"github.com/sockfaas/sockfaas/fsbind"
	"github.com/sockfaas/sockfaas/pool"
	"github.com/sockfaas/sockfaas/sandbox"
	"github.com/sockfaas/sockfaas/sandbox/cgpool"
	"github.com/sockfaas/sockfaas/sandbox/internal/sbinit"
)

// A parked sandbox: a default root and an init helper already in its own
// namespaces and pivoted into it (see WithParked). The root's name starts
// with '_', which no sandbox ID does.
type parked struct {
	root   *fsbind.Root
	cg     *cgpool.Cgroup // the helper is in it already
	helper *sbinit.Parked
}

// discard kills the helper and gives the cgroup and the root back.
func (b *Backend) discard(p parked) {
	if p.helper != nil {
		_ = p.helper.Close()
	}
	_ = b.cgroups.Put(context.Background(), p.cg)
	_ = releaseRoot(p.root)
}

// parkable says whether a sandbox of spec can use a parked helper: the
// default root and namespaces. A shared network namespace (NetNS) is
// joined at Start, so it does not matter.
func parkable(spec sandbox.Spec) bool {
	return spec.Root.IsDefault() && spec.Namespaces == sandbox.DefaultNamespaces
}

// startParking starts the background refill that keeps cfg.parked
// sandboxes parked: a pool.Generic cache, from which Create only ever
// takes (TryGet): without a parked one, the usual start is cheaper than
// parking one on the caller's path.
func (b *Backend) startParking() error {
	if b.cfg.parked == 0 {
		return nil
	}
	var err error
	b.parked, err = pool.NewGeneric(pool.GenericConfig[parked]{
		Make:    b.park,
		Destroy: func(_ context.Context, p parked) error { b.discard(p); return nil },
		Target:  b.cfg.parked,
		Logger:  b.log.With().Str("cache", "parked").Logger(),
	})
	return err
}

func (b *Backend) park(ctx context.Context) (parked, error) {
	root, err := b.roots.Build(ctx, "_park-"+strconv.FormatUint(b.parkSeq.Add(1), 10), fsbind.Spec{})
	if err != nil {
		return parked{}, err
	}
	cg, err := b.cgroups.Get(ctx, cgpool.Limits{})
	if err != nil {
		_ = root.Release()
		return parked{}, cgpoolError(err)
	}
	var helper *sbinit.Parked
	err = writeRecord(root.Dir, record{Cgroup: cg.Name(), Created: time.Now()})
	var procs []*os.File
	if err == nil {
		procs, err = cg.JoinFiles()
	}
	if err == nil {
		helper, err = b.launcher.Park(ctx, root.Path, cloneflags(sandbox.DefaultNamespaces), true, procs)
	}
	if err != nil {
		b.discard(parked{root: root, cg: cg})
		return parked{}, err
	}
	return parked{root: root, cg: cg, helper: helper}, nil
}

// takeParked returns a parked sandbox, its root renamed to id, if one is
// ready.
func (b *Backend) takeParked(id string) (parked, bool) {
	if b.parked == nil {
		return parked{}, false
	}
	p, ok := b.parked.TryGet()
	if !ok {
		return parked{}, false
	}
	root, err := p.root.Rename(id)
	if err != nil {
		b.log.Warn().Err(err).Str("sandbox", id).Msg("cannot use a parked sandbox")
		b.discard(p)
		return parked{}, false
	}
	p.root = root
	return p, true
}

// stopParked stops parking and discards what is parked.
func (b *Backend) stopParked(ctx context.Context) error {
	if b.parked == nil {
		return nil
	}
	return b.parked.Close(ctx)
}

// startParked starts cfg in the sandbox's parked helper. ok is false when
// the helper cannot take cfg (or died while parked): it is gone then, and
// the caller starts cfg the usual way.
func (s *Sandbox) startParked(ctx context.Context, helper *sbinit.Parked, cfg sbinit.Config) (_ *sbinit.Process, ok bool, _ error) {
	sp, err := helper.Start(ctx, cfg)
	if errors.Is(err, sbinit.ErrNotParkable) {
		_ = helper.Close()
		s.b.log.Debug().Err(err).Str("sandbox", s.id).Msg("parked helper not used")
		return nil, false, nil
	}
	return sp, true, err
}

// dropParkedLocked discards a parked helper the sandbox will not use.
func (s *Sandbox) dropParkedLocked() {
	if s.parked != nil {
		_ = s.parked.Close()
		s.parked = nil
	}
}
