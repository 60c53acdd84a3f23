package agent

import (
	"context"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

// peerResyncInterval re-applies the desired peers even without a change,
// so a peer removed or altered behind the agent's back comes back.
const peerResyncInterval = 30 * time.Second

// startPeerManager derives WireGuard peers from the machine records:
// desired state in the store, applied to the device on every change and
// periodically.
func (d *Daemon) startPeerManager(ctx context.Context) {
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		d.runPeerManager(ctx)
	}()
	// A revocation may replicate after the deletion of the machine's
	// record (two writes, two heads): it must re-apply peers by itself.
	go func() {
		defer d.wg.Done()
		for ctx.Err() == nil {
			changes, err := d.store.Watch(ctx, record.RevokedPrefix)
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			for ch := range changes {
				if ch.Type == crdt.Updated || ch.Type == crdt.SnapshotDone {
					d.pokePeers()
				}
			}
		}
	}()
}

func (d *Daemon) runPeerManager(ctx context.Context) {
	for ctx.Err() == nil {
		changes, err := d.store.Watch(ctx, record.MachinesPrefix)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("watch machines", "err", err)
				time.Sleep(time.Second)
			}
			continue
		}
		machines := map[string]*record.Machine{}
		live := false // apply only once the snapshot is complete
		ticker := time.NewTicker(peerResyncInterval)
	loop:
		for {
			select {
			case <-ctx.Done():
				ticker.Stop()
				return
			case <-ticker.C:
				if err := d.members.PruneTokens(time.Now()); err != nil {
					d.log.Error("prune tokens", "err", err)
				}
				if live {
					d.applyPeers(machines)
					// Deletions are not signed: a member could delete
					// this machine's record. Its owner writes it again.
					if machines[record.MachinesPrefix+d.state.MachineID] == nil {
						if err := d.members.Publish(ctx); err != nil {
							d.log.Warn("re-publish this machine's record", "err", err)
						}
					}
				}
			case <-d.peersChanged:
				if live {
					d.applyPeers(machines)
				}
			case ch, ok := <-changes:
				if !ok {
					break loop
				}
				switch ch.Type {
				case crdt.Snapshot, crdt.Updated:
					if m, ok := ch.Record.(*record.Machine); ok {
						machines[ch.Key] = m
					}
				case crdt.Deleted:
					delete(machines, ch.Key)
					if ch.Key == record.MachinesPrefix+d.state.MachineID && live {
						// Deleted, or overwritten by a record nobody
						// believes: write it again at once.
						if err := d.members.Publish(ctx); err != nil {
							d.log.Warn("re-publish this machine's record", "err", err)
						}
					}
				case crdt.Resync:
					machines, live = map[string]*record.Machine{}, false
					continue
				case crdt.SnapshotDone:
					live = true
				}
				if live {
					d.applyPeers(machines)
				}
			}
		}
		ticker.Stop()
	}
}

func (d *Daemon) applyPeers(machines map[string]*record.Machine) {
	tokenPeers, seeds := d.members.PeerSeeds(time.Now())
	revoked := d.members.Revoked(context.Background())
	live := withoutRevoked(machines, revoked)
	records := make([]*record.Machine, 0, len(live))
	for _, m := range live {
		records = append(records, m)
	}
	d.members.SetKnown(records, revoked, seeds)
	peers := append(desiredPeers(d.state.MachineID, seeds, live, d.log.Warn), tokenPeers...)
	peers = slices.DeleteFunc(peers, func(p tun.Peer) bool { return revokedKey(revoked, p.PublicKey) })
	peers = d.natPeers(peers, live, seeds)
	if err := d.dev.SyncPeers(peers); err != nil {
		d.log.Error("apply peers", "err", err)
	}
}

// desiredPeers turns machine records into WireGuard peers. Two records
// claiming one subnet (which subnet reservation exists to prevent) get no
// peer at all: routing that /24 to either could hand one machine's
// traffic to the other, so the conflict fails closed and is reported.
func desiredPeers(self string, seeds []membership.Seed, machines map[string]*record.Machine, warn func(string, ...any)) []tun.Peer {
	bySubnet := map[netip.Prefix][]tun.Peer{}
	known := map[tun.Key]bool{}
	for _, m := range machines {
		if m.ID == self {
			continue
		}
		key, err := tun.ParseKey(m.WireGuardKey)
		if err != nil {
			warn("machine record with a bad WireGuard key", "machine", m.ID, "err", err)
			continue
		}
		n, err := meshaddr.ParseSubnet(m.Subnet)
		if err != nil {
			warn("machine record with a bad subnet", "machine", m.ID, "err", err)
			continue
		}
		subnet := n.Prefix()
		p := tun.Peer{PublicKey: key, AllowedIPs: []netip.Prefix{subnet.Masked()}, PersistentKeepalive: tun.DefaultKeepalive}
		if eps := parseEndpoints(m.Endpoints); len(eps) > 0 {
			p.Endpoint = eps[0]
		}
		bySubnet[subnet.Masked()] = append(bySubnet[subnet.Masked()], p)
		known[key] = true
	}
	// Seeds carry a machine until its record has replicated here.
	for _, s := range seeds {
		if known[s.WireGuardKey] || len(bySubnet[s.Subnet]) > 0 {
			continue
		}
		p := tun.Peer{PublicKey: s.WireGuardKey, AllowedIPs: []netip.Prefix{s.Subnet}, PersistentKeepalive: tun.DefaultKeepalive}
		if len(s.Endpoints) > 0 {
			p.Endpoint = s.Endpoints[0]
		}
		bySubnet[s.Subnet] = append(bySubnet[s.Subnet], p)
	}
	var out []tun.Peer
	for subnet, ps := range bySubnet {
		if len(ps) > 1 {
			warn("several machines claim one subnet; none gets it until the conflict is resolved", "subnet", subnet, "machines", len(ps))
			continue
		}
		out = append(out, ps[0])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].AllowedIPs[0].Addr().Less(out[j].AllowedIPs[0].Addr()) })
	return out
}

// seedPeers lets a freshly joined machine reach its seeds before any
// record has replicated.
func (d *Daemon) seedPeers() []tun.Peer {
	tokenPeers, seeds := d.members.PeerSeeds(time.Now())
	return append(desiredPeers(d.state.MachineID, seeds, nil, d.log.Warn), tokenPeers...)
}

// pokePeers asks the peer manager to re-apply peers now.
func (d *Daemon) pokePeers() {
	select {
	case d.peersChanged <- struct{}{}:
	default:
	}
}

// withoutRevoked drops the records of removed machines.
func withoutRevoked(machines map[string]*record.Machine, revoked map[string]*record.Revoked) map[string]*record.Machine {
	out := make(map[string]*record.Machine, len(machines))
	for k, m := range machines {
		if revoked[m.ID] == nil {
			out[k] = m
		}
	}
	return out
}

// revokedKey reports whether a WireGuard key belongs to a removed machine;
// seeds and pending joins are checked by key, as they may lack an ID.
func revokedKey(revoked map[string]*record.Revoked, key tun.Key) bool {
	for _, r := range revoked {
		if r.WireGuardKey == key.String() {
			return true
		}
	}
	return false
}
