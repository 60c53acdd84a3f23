package agent

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/tun"
)

// gossipMeta is what a machine tells others about itself in gossip
// metadata: facts that may change at every restart, so they stay out of
// the replicated state.
type gossipMeta struct {
	Version string `json:"v,omitempty"`
	Mode    string `json:"m,omitempty"`
	// Exposed are a netstack machine's exposed ports (encodeExposed).
	Exposed string `json:"x,omitempty"`
	// Containers is whether containers can run there: "yes", or "no: "
	// and why (localDocker.capability).
	Containers string `json:"c,omitempty"`
}

// metaExposedBudget is what the exposed ports may take of gossip's
// 512-byte metadata; version and mode need well under 100, the
// containers' capability at most maxCapability.
const metaExposedBudget = 320

func (d *Daemon) encodeMeta() []byte {
	meta := gossipMeta{Version: d.opts.Version, Mode: d.mode(),
		Exposed: d.announcedExposed(metaExposedBudget)}
	if d.containers != nil {
		meta.Containers = d.containers.capability()
	}
	b, _ := json.Marshal(meta)
	return b
}

// Machines implements api.Backend: the records, with liveness from the
// reachability view (gossip and WireGuard, reach.go) and the path in use
// from WireGuard.
func (d *Daemon) Machines(ctx context.Context) ([]api.MachineInfo, error) {
	records, err := d.machines(ctx)
	if err != nil {
		return nil, err
	}
	reach := d.reach.current(ctx)
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
	// A relayed peer is named by its relay machine, as 'uncloud mesh' does,
	// not by the relay's underlay address.
	via := map[string]string{}
	if d.nat != nil {
		for _, p := range d.nat.mgr.Status().Peers {
			via[p.Key.String()] = p.Via
		}
	}
	out := make([]api.MachineInfo, 0, len(records))
	for _, m := range records {
		info := api.MachineInfo{ID: m.ID, Name: m.Name, Subnet: m.Subnet, State: "down", Roles: m.Roles, Labels: m.Labels}
		if n, err := meshaddr.ParseSubnet(m.Subnet); err == nil {
			info.Address = n.MachineAddr().String()
		}
		if meta, ok := alive[m.ID]; ok {
			info.State, info.Mode, info.Version = "alive", meta.Mode, meta.Version
			info.Exposed = decodeExposed(meta.Exposed)
			info.Containers = meta.Containers
			switch {
			case !reach[m.ID]:
				// Gossip still has it, but nothing came from it over
				// WireGuard for seconds: down from here, as the resolver
				// and the ingress see it.
				info.State = "down"
			case d.gossip.Suspected(m.ID):
				info.State = "suspect" // a probe failed; not declared dead yet
			}
		}
		if m.ID == d.state.MachineID {
			info.State, info.Mode, info.Version = "self", d.mode(), d.opts.Version
			if d.containers != nil {
				info.Containers = d.containers.capability()
			}
			info.Exposed = nil
			if st := d.hostnet.Status(); st.Forwarding {
				info.Exposed = hostNetInfo(st).Exposed
			}
		}
		if p, ok := byKey[m.WireGuardKey]; ok {
			info.Endpoint = endpointInUse(p)
			if v := via[m.WireGuardKey]; p.Relay != nil && v != "" {
				info.Endpoint = "relay via " + v
			}
			info.LastHandshake = p.LastHandshake
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
