package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/nat"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

// natConfigFile is the optional NAT traversal configuration in the data
// dir. Every field may be left out.
const natConfigFile = "nat.json"

// natSettings is the content of nat.json.
type natSettings struct {
	// Public are extra public endpoints, "ip:port" (a port forward), on
	// top of the machine's --public-ip.
	Public []string `json:"public,omitempty"`
	// Exclude are prefixes or interface name prefixes never offered as
	// candidates, added to the defaults (the mesh, Docker, veths).
	Exclude []string `json:"exclude,omitempty"`
	// STUNServers are optional public STUN servers, "ip:port".
	STUNServers []string `json:"stun_servers,omitempty"`
	// PreferredRelays are machine names or IDs to relay through first.
	PreferredRelays []string `json:"preferred_relays,omitempty"`
	// NoRelay makes this machine refuse to relay for others.
	NoRelay bool `json:"no_relay,omitempty"`
	// RelayMbps bounds what one machine may relay through this one, in
	// megabits per second (Mbit/s, 10^6 bits); zero means
	// nat.DefaultRelayMbps.
	RelayMbps float64 `json:"relay_mbps,omitempty"`
}

// natLayer is the agent's side of package nat.
type natLayer struct {
	mgr        *nat.Manager
	preferred  []string
	public     bool                             // a configured public endpoint
	candidates atomic.Pointer[[]netip.AddrPort] // last published by the manager
}

func loadNATSettings(dataDir string) (natSettings, error) {
	var s natSettings
	path := filepath.Join(dataDir, natConfigFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func parseAddrPorts(what string, ss []string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, s := range ss {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, s, err)
		}
		out = append(out, ap)
	}
	return out, nil
}

// startNAT starts endpoint discovery, path selection and the relay on
// the WireGuard socket. A bad nat.json stops the agent with an error that
// names the file and the field.
func (d *Daemon) startNAT(ctx context.Context) error {
	s, err := loadNATSettings(d.opts.DataDir)
	if err != nil {
		return err
	}
	filter, err := nat.ParseFilter(s.Exclude)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(d.opts.DataDir, natConfigFile), err)
	}
	public, err := parseAddrPorts("public endpoint", s.Public)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(d.opts.DataDir, natConfigFile), err)
	}
	if d.state.PublicIP.IsValid() {
		public = append([]netip.AddrPort{netip.AddrPortFrom(d.state.PublicIP, d.state.ListenPort)}, public...)
	}
	servers, err := parseAddrPorts("STUN server", s.STUNServers)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(d.opts.DataDir, natConfigFile), err)
	}
	layer := &natLayer{preferred: s.PreferredRelays, public: len(public) > 0}
	mgr, err := nat.New(nat.Config{
		PrivateKey:   d.state.WireGuardKey,
		ListenPort:   d.state.ListenPort,
		Device:       pollingDevice{d.dev},
		Socket:       d.dev.Bind(),
		Filter:       filter,
		Public:       public,
		STUNServers:  servers,
		RelayMbps:    s.RelayMbps,
		DisableRelay: s.NoRelay,
		Publish: func(ctx context.Context, cands []netip.AddrPort) error {
			layer.candidates.Store(&cands)
			return d.members.Publish(ctx)
		},
		Logger: d.log,
	})
	if err != nil {
		return err
	}
	layer.mgr = mgr
	d.nat = layer
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := mgr.Run(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("NAT traversal stopped", "err", err)
		}
	}()
	return nil
}

// reachability is what membership asks before issuing a token: whether
// this machine can be reached from outside its NAT, and which peers can.
func (d *Daemon) reachability() membership.Reachability {
	if d.nat == nil {
		return membership.Reachability{NAT: nat.TypeUnknown}
	}
	st := d.nat.mgr.Status()
	r := membership.Reachability{NAT: st.NAT, Public: d.nat.public, PeerNAT: make(map[tun.Key]nat.Type, len(st.Peers))}
	for _, p := range st.Peers {
		r.PeerNAT[p.Key] = p.NAT
	}
	return r
}

// natPeers tells the NAT layer about the peers the peer manager applied,
// and hands it their endpoints: a peer the layer already drives gets a
// zero endpoint from the peer manager, so the path it chose stays.
func (d *Daemon) natPeers(peers []tun.Peer, live map[string]*record.Machine, seeds []membership.Seed) []tun.Peer {
	if d.nat == nil {
		return peers
	}
	byKey := map[tun.Key]nat.Peer{}
	for _, m := range live {
		key, err := tun.ParseKey(m.WireGuardKey)
		if err != nil || m.ID == d.state.MachineID {
			continue
		}
		byKey[key] = nat.Peer{Key: key, Name: m.Name, Candidates: parseEndpoints(m.Endpoints),
			PreferredRelay: slices.Contains(d.nat.preferred, m.Name) || slices.Contains(d.nat.preferred, m.ID)}
	}
	for _, s := range seeds {
		if _, ok := byKey[s.WireGuardKey]; !ok && !s.WireGuardKey.IsZero() {
			byKey[s.WireGuardKey] = nat.Peer{Key: s.WireGuardKey, Name: s.MachineID, Candidates: s.Endpoints}
		}
	}
	var np []nat.Peer
	out := make([]tun.Peer, len(peers))
	for i, p := range peers {
		out[i] = p
		in, ok := byKey[p.PublicKey]
		if !ok {
			continue // a temporary join peer: not a machine yet
		}
		np = append(np, in)
		if d.nat.mgr.Knows(p.PublicKey) {
			out[i].Endpoint = netip.AddrPort{}
		}
	}
	d.nat.mgr.SetPeers(np)
	return out
}

// endpointInUse is what `machine ls` shows: the address WireGuard sends
// to, or the relay it goes through.
func endpointInUse(p tun.PeerStatus) string {
	if p.Relay != nil {
		return "relay " + p.Relay.Relay.String()
	}
	if p.Endpoint.IsValid() {
		return p.Endpoint.String()
	}
	return ""
}

// Mesh implements api.MeshBackend.
func (d *Daemon) Mesh(ctx context.Context) (api.MeshStatus, error) {
	if d.nat == nil {
		return api.MeshStatus{}, errors.New("NAT traversal is not running on this machine")
	}
	st := d.nat.mgr.Status()
	out := api.MeshStatus{
		Machine:    d.snapshot().Name,
		NAT:        string(st.NAT),
		Reflexive:  endpointStrings(st.Reflexive),
		Candidates: endpointStrings(st.Candidates),
		Keepalive:  tun.DefaultKeepalive.String(),
		Relay: api.MeshRelayStats{Forwarded: st.Relay.Forwarded, ForwardedBytes: st.Relay.ForwardedByte,
			Delivered: st.Relay.Delivered, Sent: st.Relay.Sent, Dropped: st.Relay.Dropped,
			Replayed: st.Relay.Replayed, Stale: st.Relay.Stale,
			RateLimited: st.Relay.RateLimited, NoRoute: st.Relay.NoRoute, BudgetMbps: st.RelayMbps},
		STUN: api.MeshSTUNStats{Received: st.STUN.Received, Sent: st.STUN.Sent, Answered: st.STUN.Answered,
			Garbage: st.STUN.Garbage, Rejected: st.STUN.Rejected, Duplicate: st.STUN.Duplicate, Unsolicited: st.STUN.Unsolicite, Limited: st.STUN.Limited,
			Filtered: st.STUN.Filtered, ProbesLimited: st.STUN.ProbesLimited},
	}
	b := d.dev.Bind().Stats()
	out.Socket = api.MeshSocketStats{Control: b.Control, ControlDropped: b.ControlDropped, Unknown: b.Unknown,
		RelayIn: b.RelayIn, RelayDelivered: b.RelayDelivered}
	names := map[string]string{}
	if recs, err := d.machines(ctx); err == nil {
		for _, m := range recs {
			names[m.WireGuardKey] = m.Name
		}
	}
	for _, p := range st.Peers {
		name := names[p.Key.String()]
		if name == "" {
			name = p.Name
		}
		mp := api.MeshPeer{
			Machine:       name,
			PublicKey:     p.Key.String(),
			Path:          string(p.Path),
			Endpoint:      p.Endpoint,
			Via:           p.Via,
			NAT:           string(p.NAT),
			LastHandshake: p.LastHandshake,
			RTT:           p.RTT,
			Since:         p.Since,
			Candidates:    endpointStrings(p.Candidates),
			FirstDirect:   p.FirstDirect,
			FirstRelay:    p.FirstRelay,
		}
		out.Peers = append(out.Peers, mp)
	}
	sort.Slice(out.Peers, func(i, j int) bool { return out.Peers[i].Machine < out.Peers[j].Machine })
	out.At = time.Now().UTC()
	return out, nil
}

// pollingDevice gives the NAT layer's once-a-second poll the peer state
// read by another poller in the same second (the resolver's reachability
// view), rather than a second read of all of WireGuard's peers.
type pollingDevice struct{ *tun.Device }

func (p pollingDevice) Peers() ([]tun.PeerStatus, error) { return p.RecentPeers(time.Second) }
