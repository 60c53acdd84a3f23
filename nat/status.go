package nat

import (
	"net/netip"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

// PeerStatus is the path to one peer as this machine sees it.
type PeerStatus struct {
	Key           tun.Key
	Name          string
	Path          Path
	Endpoint      string         // in use by WireGuard: ip:port, or the relay's
	Via           string         // the relay's name, when relayed
	ViaEndpoint   netip.AddrPort // the relay's endpoint, when relayed
	LastHandshake time.Time
	RTT           time.Duration // of the last answered probe
	NAT           Type          // what the peer says of itself
	Since         time.Time     // when the path last changed
	Candidates    []netip.AddrPort
	// FirstDirect and FirstRelay are how long the first search took to
	// find a direct path, or to settle on a relay (zero: not yet).
	FirstDirect time.Duration
	FirstRelay  time.Duration
}

// Status is this machine's NAT traversal state.
type Status struct {
	NAT        Type
	Reflexive  []netip.AddrPort
	Candidates []netip.AddrPort
	Peers      []PeerStatus
	Relay      RelayStats
	STUN       STUNStats
	// RelayMbps is the relay budget of each sender, Mbit/s.
	RelayMbps float64
}

// Status reports the NAT type, candidates and every peer's path. The
// path shown is WireGuard's own endpoint (which roaming may have moved),
// so it is never a stale decision of this package.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	st := Status{
		NAT:        m.natType,
		Reflexive:  Reflexive(m.obs, now),
		Candidates: m.candidates(now),
		Relay:      m.relayStats.snapshot(),
		STUN:       m.stunStats.snapshot(),
		RelayMbps:  m.cfg.RelayMbps,
	}
	t := m.table.Load()
	for _, p := range t.sorted {
		li := p.liveInfo()
		ps := PeerStatus{
			Key: p.key, Name: p.name, Path: p.path, LastHandshake: li.handshake, RTT: p.rtt,
			NAT: p.remoteNAT, Since: p.pathSince, Candidates: p.allCandidates(),
			FirstDirect: p.firstDirect, FirstRelay: p.firstRelay,
		}
		switch {
		case li.relayed:
			ps.Path = PathRelayed
			ps.ViaEndpoint = li.via
			ps.Endpoint = li.via.String()
			if r := t.byAddr(li.via); r != nil {
				ps.Via = r.name
			}
		case li.endpoint.IsValid():
			ps.Endpoint = li.endpoint.String()
			if p.path == PathRelayed {
				ps.Path = PathDirect // the peer came to us directly; WireGuard roamed
			}
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}

// Answered returns, per peer with a direct path, when its authenticated
// probe was last answered: the peer's own process answered on its
// WireGuard socket, keyed for this pair, so it is alive and reachable
// from here. The agent counts it as hearing the peer, next to what
// WireGuard receives, so idle direct peers need no extra traffic.
func (m *Manager) Answered() map[tun.Key]time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.table.Load()
	out := make(map[tun.Key]time.Time, len(t.byID))
	for _, p := range t.byID {
		if p.path == PathDirect && !p.directOK.IsZero() {
			out[p.key] = p.directOK
		}
	}
	return out
}
