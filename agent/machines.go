package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

// gossipMeta is what a machine tells others about itself in gossip
// metadata: facts that may change at every restart, so they stay out of
// the replicated state.
type gossipMeta struct {
	Version string `json:"v,omitempty"`
	Mode    string `json:"m,omitempty"`
}

func (d *Daemon) encodeMeta() []byte {
	b, _ := json.Marshal(gossipMeta{Version: d.opts.Version, Mode: string(d.dev.Mode())})
	return b
}

// Machines implements api.Backend: the records, with liveness from gossip
// and the path in use from WireGuard.
func (d *Daemon) Machines(ctx context.Context) ([]api.MachineInfo, error) {
	records, err := d.machines(ctx)
	if err != nil {
		return nil, err
	}
	alive := map[string]gossipMeta{}
	for _, m := range d.gossip.Members() {
		var meta gossipMeta
		json.Unmarshal(m.Meta, &meta) // unknown or old metadata just shows empty
		alive[m.Name] = meta
	}
	peers, err := d.dev.Peers()
	if err != nil {
		return nil, err
	}
	byKey := map[string]tun.PeerStatus{}
	for _, p := range peers {
		byKey[p.PublicKey.String()] = p
	}
	out := make([]api.MachineInfo, 0, len(records))
	for _, m := range records {
		info := api.MachineInfo{ID: m.ID, Name: m.Name, Subnet: m.Subnet, State: "down", Roles: m.Roles}
		if n, err := meshaddr.ParseSubnet(m.Subnet); err == nil {
			info.Address = n.MachineAddr().String()
		}
		if meta, ok := alive[m.ID]; ok {
			info.State, info.Mode, info.Version = "alive", meta.Mode, meta.Version
			if d.gossip.Suspected(m.ID) {
				info.State = "suspect" // a probe failed; not declared dead yet
			}
		}
		if m.ID == d.state.MachineID {
			info.State, info.Mode, info.Version = "self", string(d.dev.Mode()), d.opts.Version
		}
		if p, ok := byKey[m.WireGuardKey]; ok {
			info.Endpoint = endpointInUse(p)
			info.LastHandshake = p.LastHandshake
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RemoveMachine implements api.Backend: the machine's keys go into the
// add-only revoked set, which every machine's peer manager and machine API
// check, its record is deleted and the gossip key is rotated. The removed
// machine cannot come back with its old keys, even if it missed the
// removal and rewrites its record.
func (d *Daemon) RemoveMachine(ctx context.Context, nameOrID string) (api.RemoveResult, error) {
	target, err := d.findMachine(ctx, nameOrID)
	if err != nil {
		return api.RemoveResult{}, err
	}
	if target.ID == d.state.MachineID {
		return api.RemoveResult{}, fmt.Errorf("%w: %s is this machine; remove it from another machine of the network", api.ErrBadRequest, target.Name)
	}
	rec := &record.Revoked{MachineID: target.ID, Name: target.Name, WireGuardKey: target.WireGuardKey,
		IdentityKey: target.IdentityKey, By: d.state.MachineID, At: time.Now().UTC()}
	if err := d.store.Put(ctx, rec.Key(), rec); err != nil {
		return api.RemoveResult{}, fmt.Errorf("revoke %s: %w", target.Name, err)
	}
	if err := d.store.Delete(ctx, target.Key()); err != nil && !errors.Is(err, crdt.ErrNotFound) {
		d.log.Warn("revoked machine's record not deleted", "machine", target.Name, "err", err)
	}
	d.pokePeers()
	d.log.Info("machine removed", "name", target.Name, "id", target.ID)
	res := api.RemoveResult{Name: target.Name}
	// The revocation must be known (and the removed machine no longer
	// authorized) before the new key travels, hence the order.
	reached, missed, err := d.rotateGossipKey(ctx)
	if err != nil {
		return res, fmt.Errorf("%s is removed, but rotating the gossip key failed: %w", target.Name, err)
	}
	res.Rotated, res.Missed, res.Machines = reached, missed, reached+len(missed)
	return res, nil
}
