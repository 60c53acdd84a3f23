package agent

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/gossip"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/tun"
)

// reachCheck is how often the reachability view is recomputed from the
// in-memory gossip member list and WireGuard's peer state (neither is the
// store; gossip's event channel has a single reader, so it is not taken),
// and how often a silent peer is pinged (heard.go).
const reachCheck = time.Second

// quietPingEvery is how often a peer silent for over a minute (a machine
// that is off, or across a long partition) is still pinged: often enough
// that a heal is noticed within seconds, rarely enough to cost nothing.
const quietPingEvery = 5 * time.Second

// meshReach is which machines this one can reach now: gossip has them
// alive and this machine has heard from them over WireGuard within
// silentAfter (heard.go). Gossip alone is not enough: memberlist's
// indirect probes keep a machine alive that others reach and this one
// does not, and its suspicion timeout takes 8–48 s to call a machine
// dead; WireGuard's receive counter tells within seconds. The resolver and the
// ingress each take a view of this one poller (resolver.Reachability and
// ingress.Reachability), so both answer from the same facts.
type meshReach struct {
	d     *Daemon
	cur   atomic.Pointer[map[string]bool]
	heard *heardLog

	refreshMu sync.Mutex // one computation at a time, so an older answer never overwrites a newer one
	pingMu    sync.Mutex
	pinging   map[string]bool      // a ping in flight, by machine ID
	lastPing  map[string]time.Time // by machine ID

	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

func newMeshReach(d *Daemon) *meshReach {
	r := &meshReach{d: d, subs: map[chan struct{}]struct{}{}, heard: newHeardLog(),
		pinging: map[string]bool{}, lastPing: map[string]time.Time{}}
	r.cur.Store(&map[string]bool{d.state.MachineID: true})
	return r
}

// startReach computes the view once and then every reachCheck.
func (d *Daemon) startReach(ctx context.Context) {
	d.reach = newMeshReach(d)
	d.reach.refresh(ctx, time.Second, false)
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
				d.reach.refresh(ctx, time.Second, true)
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

// refresh recomputes the view from a WireGuard reading at most maxAge
// old and publishes it; with ping, silent peers are pinged.
func (r *meshReach) refresh(ctx context.Context, maxAge time.Duration, ping bool) {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	r.publish(r.compute(ctx, time.Now(), maxAge, ping))
}

// current refreshes the view from a reading at most 250 ms old (the NAT
// layer's once-a-second reading is shared otherwise) and returns it: for
// answers to a person or a test, which should not lag a whole check.
func (r *meshReach) current(ctx context.Context) map[string]bool {
	r.refresh(ctx, 250*time.Millisecond, false)
	return *r.cur.Load()
}

// publish makes next the answer and signals every view if it changed.
func (r *meshReach) publish(next map[string]bool) {
	prev := *r.cur.Load()
	if maps.Equal(next, prev) {
		return
	}
	r.cur.Store(&next)
	if r.d != nil {
		for id := range prev {
			if !next[id] {
				r.d.log.Info("machine unreachable from here", "machine", id)
			}
		}
		for id := range next {
			if !prev[id] {
				r.d.log.Debug("machine reachable from here", "machine", id)
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (r *meshReach) compute(ctx context.Context, now time.Time, maxAge time.Duration, ping bool) map[string]bool {
	d := r.d
	peers, err := d.dev.RecentPeers(maxAge) // the NAT layer polls it too
	if err != nil {
		d.log.Warn("reachability: read WireGuard peers", "err", err)
	}
	byKey := r.heard.update(peers, now)
	probed := map[tun.Key]bool{}
	if d.nat != nil {
		for k, at := range d.nat.mgr.Answered() {
			probed[k] = true
			if at.After(byKey[k]) && !at.After(now) {
				byKey[k] = at
			}
		}
	}
	heardAt := heardBySubnet(peers, byKey)
	known := d.members.Known(ctx)
	set := reachableSet(d.state.MachineID, d.gossip.Members(), heardAt, known, now)
	if ping {
		r.pingSilent(known, heardAt, probedSubnets(peers, probed), set, now)
	}
	return set
}

// heardBySubnet keys the peers' last-heard times by their mesh subnet.
func heardBySubnet(peers []tun.PeerStatus, heardAt map[tun.Key]time.Time) map[meshaddr.Subnet]time.Time {
	out := map[meshaddr.Subnet]time.Time{}
	for _, p := range peers {
		for _, pfx := range p.AllowedIPs {
			if n, err := meshaddr.SubnetOfPrefix(pfx); err == nil {
				out[n] = heardAt[p.PublicKey]
			}
		}
	}
	return out
}

// probedSubnets are the mesh subnets of the peers whose direct path the
// NAT layer probes.
func probedSubnets(peers []tun.PeerStatus, probed map[tun.Key]bool) map[meshaddr.Subnet]bool {
	out := map[meshaddr.Subnet]bool{}
	for _, p := range peers {
		if !probed[p.PublicKey] {
			continue
		}
		for _, pfx := range p.AllowedIPs {
			if n, err := meshaddr.SubnetOfPrefix(pfx); err == nil {
				out[n] = true
			}
		}
	}
	return out
}

// pingSilent pings, in the background, every known machine with a
// WireGuard peer that has been silent for pingAfter; a machine heard (or
// answering) that gossip does not have alive is reconnected at once, which
// is how a healed partition comes back within seconds.
func (r *meshReach) pingSilent(known []membership.Known, heardAt map[meshaddr.Subnet]time.Time, probed map[meshaddr.Subnet]bool,
	reachable map[string]bool, now time.Time) {
	d := r.d
	r.pingMu.Lock()
	defer r.pingMu.Unlock()
	for _, m := range known {
		at, peer := heardAt[m.Subnet]
		if m.ID == d.state.MachineID || !peer {
			continue
		}
		silence := now.Sub(at)
		if silence < silentAfter && !reachable[m.ID] {
			d.gossip.Reconnect(m.ID) // heard, but gossip has it dead: merge now
		}
		if !pingDue(silence, probed[m.Subnet]) || r.pinging[m.ID] {
			continue
		}
		if silence > time.Minute && now.Sub(r.lastPing[m.ID]) < quietPingEvery {
			continue
		}
		r.pinging[m.ID], r.lastPing[m.ID] = true, now
		d.wg.Go(func() {
			_, err := d.gossip.Ping(m.ID)
			if err == nil {
				d.gossip.Reconnect(m.ID)
			}
			r.pingMu.Lock()
			delete(r.pinging, m.ID)
			r.pingMu.Unlock()
		})
	}
	for id := range r.lastPing {
		if !slices.ContainsFunc(known, func(k membership.Known) bool { return k.ID == id }) {
			delete(r.lastPing, id)
		}
	}
}

// reachableSet is this machine plus every known machine that gossip has
// alive and that this machine heard from within silentAfter.
func reachableSet(self string, members []gossip.Member, heardAt map[meshaddr.Subnet]time.Time, known []membership.Known, now time.Time) map[string]bool {
	alive := map[string]bool{}
	for _, m := range members {
		if m.State == gossip.Alive {
			alive[m.Name] = true
		}
	}
	out := map[string]bool{self: true}
	for _, m := range known {
		at, ok := heardAt[m.Subnet]
		if alive[m.ID] && ok && !at.IsZero() && now.Sub(at) <= silentAfter {
			out[m.ID] = true
		}
	}
	return out
}
