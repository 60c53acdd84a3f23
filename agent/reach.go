package agent

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/gossip"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/tun"
)

// handshakeFresh is how old a WireGuard handshake may be for its peer to
// count as reachable: WireGuard itself refuses a session older than 180 s
// (REJECT_AFTER_TIME), and a live peer re-handshakes before that.
const handshakeFresh = 180*time.Second + 15*time.Second

// reachCheck is how often the reachability view is recomputed from the
// in-memory gossip member list and WireGuard's peer state (neither is the
// store; gossip's event channel has a single reader, so it is not taken).
const reachCheck = time.Second

// meshReach is which machines this one can reach now: gossip has them
// alive and this machine's own WireGuard session with them is fresh.
// Gossip alone is not enough: memberlist's indirect probes keep a machine
// alive that others reach and this one does not. The resolver and the
// ingress each take a view of this one poller (resolver.Reachability and
// ingress.Reachability), so both answer from the same facts.
type meshReach struct {
	d   *Daemon
	cur atomic.Pointer[map[string]bool]

	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

func newMeshReach(d *Daemon) *meshReach {
	r := &meshReach{d: d, subs: map[chan struct{}]struct{}{}}
	r.cur.Store(&map[string]bool{d.state.MachineID: true})
	return r
}

// startReach computes the view once and then every reachCheck.
func (d *Daemon) startReach(ctx context.Context) {
	d.reach = newMeshReach(d)
	d.reach.refresh(ctx)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTicker(reachCheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				d.reach.refresh(ctx)
			}
		}
	}()
}

// reachView is one consumer's handle: the shared answers, its own change
// signal (one buffered slot: a burst of changes is one wake-up). It stops
// being signalled when ctx is done.
type reachView struct {
	r       *meshReach
	changed chan struct{}
}

func (r *meshReach) view(ctx context.Context) reachView {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs[ch] = struct{}{}
	r.mu.Unlock()
	context.AfterFunc(ctx, func() {
		r.mu.Lock()
		delete(r.subs, ch)
		r.mu.Unlock()
	})
	return reachView{r: r, changed: ch}
}

func (v reachView) Reachable(id string) bool { return (*v.r.cur.Load())[id] }

func (v reachView) Changed() <-chan struct{} { return v.changed }

func (r *meshReach) refresh(ctx context.Context) { r.publish(r.compute(ctx, time.Now())) }

// publish makes next the answer and signals every view if it changed.
func (r *meshReach) publish(next map[string]bool) {
	if maps.Equal(next, *r.cur.Load()) {
		return
	}
	r.cur.Store(&next)
	r.mu.Lock()
	defer r.mu.Unlock()
	for ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (r *meshReach) compute(ctx context.Context, now time.Time) map[string]bool {
	d := r.d
	peers, err := d.dev.RecentPeers(time.Second) // the NAT layer polls it too
	if err != nil {
		d.log.Warn("reachability: read WireGuard peers", "err", err)
	}
	return reachableSet(d.state.MachineID, d.gossip.Members(), peers, d.members.Known(ctx), now)
}

// reachableSet is this machine plus every known machine that gossip has
// alive and whose WireGuard session with this machine is fresh.
func reachableSet(self string, members []gossip.Member, peers []tun.PeerStatus, known []membership.Known, now time.Time) map[string]bool {
	alive := map[string]bool{}
	for _, m := range members {
		if m.State == gossip.Alive {
			alive[m.Name] = true
		}
	}
	fresh := map[meshaddr.Subnet]bool{} // subnet number → a fresh session
	for _, p := range peers {
		if p.LastHandshake.IsZero() || now.Sub(p.LastHandshake) > handshakeFresh {
			continue
		}
		for _, pfx := range p.AllowedIPs {
			if n, err := meshaddr.SubnetOfPrefix(pfx); err == nil {
				fresh[n] = true
			}
		}
	}
	out := map[string]bool{self: true}
	for _, m := range known {
		if alive[m.ID] && fresh[m.Subnet] {
			out[m.ID] = true
		}
	}
	return out
}
