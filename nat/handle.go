package nat

import (
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
)

// STUNStats counts the STUN side of the WireGuard socket.
type STUNStats struct {
	Received   uint64 `json:"received"`
	Sent       uint64 `json:"sent"`
	Answered   uint64 `json:"answered"`    // plain binding requests answered (as a server)
	Garbage    uint64 `json:"garbage"`     // did not decode, or an unexpected kind
	Rejected   uint64 `json:"rejected"`    // failed authentication, stale, not ours
	Duplicate  uint64 `json:"duplicate"`   // seen before: a replay, or a copy through a second relay
	Unsolicite uint64 `json:"unsolicited"` // responses to nothing we sent
	Limited    uint64 `json:"limited"`     // requests over the server's rate
}

type stunCounters struct {
	received, sent, answered, garbage, rejected, duplicate, unsolicited, limited atomic.Uint64
}

func (c *stunCounters) snapshot() STUNStats {
	return STUNStats{Received: c.received.Load(), Sent: c.sent.Load(), Answered: c.answered.Load(),
		Garbage: c.garbage.Load(), Rejected: c.rejected.Load(), Duplicate: c.duplicate.Load(), Unsolicite: c.unsolicited.Load(), Limited: c.limited.Load()}
}

// queueRelayedControl passes a STUN message that a relay delivered to the
// manager loop; the packet path never blocks on it.
func (m *Manager) queueRelayedControl(src *peer, from netip.AddrPort, data []byte) {
	select {
	case m.relayedCtl <- relayedControl{src: src, from: from, data: append([]byte(nil), data...)}:
	default:
		m.stunStats.limited.Add(1)
	}
}

// handleSTUN handles one STUN message from the socket, or (relayed set)
// one that a relay delivered from that peer. Runs under m.mu.
func (m *Manager) handleSTUN(from netip.AddrPort, data []byte, relayed *peer) {
	m.stunStats.received.Add(1)
	msg := &stun.Message{Raw: data}
	if err := msg.Decode(); err != nil {
		m.stunStats.garbage.Add(1)
		return
	}
	now := time.Now()
	switch msg.Type {
	case stun.BindingRequest:
		if _, _, ok := parseUsername(msg); !ok {
			m.answerDiscovery(msg, from, relayed)
			return
		}
		p := m.checkPeerMessage(msg, relayed, now)
		if p == nil || relayed != nil {
			return
		}
		resp, err := authenticated(p.keys.probe, m.id, p.id,
			[]stun.Setter{stun.NewTransactionIDSetter(msg.TransactionID), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: net.IP(from.Addr().AsSlice()), Port: int(from.Port())}},
			textAttr{attrNAT, string(m.natType)})
		if err == nil && m.cfg.Socket.SendTo(resp.Raw, from) == nil {
			m.stunStats.sent.Add(1)
		}
		m.onProbeFrom(p, from, now)
	case stun.BindingSuccess:
		tx, ok := m.pending[msg.TransactionID]
		if !ok || relayed != nil || tx.to != from {
			m.stunStats.unsolicited.Add(1)
			return
		}
		delete(m.pending, msg.TransactionID)
		if tx.peer == nil {
			if mapped, err := mappedAddress(msg); err == nil {
				m.addObservation(from, mapped, now)
			}
			return
		}
		p := tx.peer
		if err := checkAuthenticated(msg, p.keys.probe, now); err != nil {
			m.stunStats.rejected.Add(1)
			return
		}
		if mapped, err := mappedAddress(msg); err == nil {
			m.addObservation(from, mapped, now)
		}
		if t := Type(textOf(msg, attrNAT)); t != "" {
			p.remoteNAT = t
		}
		m.onProbeOK(p, from, now.Sub(tx.sent), now)
	case callMeMaybe:
		p := m.checkPeerMessage(msg, relayed, now)
		if p == nil {
			return
		}
		p.remoteCands = parseCandidates(msg)
		if t := Type(textOf(msg, attrNAT)); t != "" {
			p.remoteNAT = t
		}
		m.onCallMeMaybe(p, now)
	default:
		m.stunStats.garbage.Add(1)
	}
}

// answerDiscovery answers a plain binding request, as any STUN server
// would, within a global rate (the answer is barely larger than the
// request, so the socket is no amplifier).
func (m *Manager) answerDiscovery(req *stun.Message, from netip.AddrPort, relayed *peer) {
	if relayed != nil {
		m.stunStats.garbage.Add(1)
		return
	}
	if !m.serverLimit.Allow() {
		m.stunStats.limited.Add(1)
		return
	}
	resp, err := bindingSuccess(req, from, stun.Fingerprint)
	if err != nil {
		return
	}
	if m.cfg.Socket.SendTo(resp.Raw, from) == nil {
		m.stunStats.answered.Add(1)
	}
}

// checkPeerMessage authenticates a probe or call-me-maybe: addressed to
// this machine, from a known machine (the one the relay vouched for, when
// relayed), with that pair's key, fresh, and never seen before.
func (m *Manager) checkPeerMessage(msg *stun.Message, relayed *peer, now time.Time) *peer {
	fromID, toID, ok := parseUsername(msg)
	reject := func() *peer { m.stunStats.rejected.Add(1); return nil }
	if !ok || toID != m.id {
		return reject()
	}
	p := m.table.Load().byID[fromID]
	if p == nil || (relayed != nil && relayed != p) {
		return reject()
	}
	if err := checkAuthenticated(msg, p.keys.probe, now); err != nil {
		return reject()
	}
	if _, dup := m.seen[msg.TransactionID]; dup {
		m.stunStats.duplicate.Add(1)
		return nil
	}
	m.seen[msg.TransactionID] = now
	return p
}

// onProbeOK: a probe to addr was answered. The first answered pair wins;
// a working direct path is not replaced by another one.
func (m *Manager) onProbeOK(p *peer, addr netip.AddrPort, rtt time.Duration, now time.Time) {
	p.rtt = rtt
	if p.path == PathDirect && p.direct == addr {
		p.directOK = now
		p.probing = false
		return
	}
	// Keep a direct path that answered lately; one that has missed its
	// last probe (a NAT reboot moved the peer) gives way at once.
	if p.directHealthy(now) && now.Sub(p.directOK) < directProbeInterval+time.Second {
		return
	}
	if err := m.setEndpoint(p, addr.String()); err != nil {
		m.log.Warn("direct endpoint", "err", err)
		return
	}
	if p.firstDirect == 0 {
		p.firstDirect = now.Sub(p.searchStart)
	}
	m.log.Info("direct path", "peer", p.name, "endpoint", addr, "was", p.path,
		"after", now.Sub(p.searchStart).Round(time.Millisecond), "rtt", rtt.Round(time.Microsecond))
	p.path, p.direct, p.directOK, p.pathSince, p.lastDirectTx = PathDirect, addr, now, now, now
	p.probing, p.failedSearches = false, 0
}

// onProbeFrom: the peer probed us from addr. That address is a candidate
// (peer-reflexive, in ICE's words), and probing it back right away is what
// opens this side's NAT for the peer's next probe.
func (m *Manager) onProbeFrom(p *peer, addr netip.AddrPort, now time.Time) {
	if !slices.Contains(p.seenFrom, addr) {
		p.seenFrom = append(p.seenFrom, addr)
		if len(p.seenFrom) > 4 {
			p.seenFrom = p.seenFrom[1:]
		}
	}
	if p.directHealthy(now) && p.direct == addr {
		return
	}
	m.sendProbe(p, addr, now)
	if !p.directHealthy(now) {
		p.startProbing(now)
	}
}

// onCallMeMaybe: the peer is probing and asks us to probe it at once.
func (m *Manager) onCallMeMaybe(p *peer, now time.Time) {
	for _, c := range p.allCandidates() {
		m.sendProbe(p, c, now)
	}
	// Answer with our own fresh candidates, so that both sides probe each
	// other's current mappings in the same second (rate-limited: two
	// probing machines must not echo call-me-maybe forever).
	if now.Sub(p.lastCMM) > callMeMaybeInterval/2 {
		m.sendCallMeMaybe(m.table.Load(), p, now)
	}
	if !p.directHealthy(now) {
		p.startProbing(now)
		p.nextRound = now.Add(probeRoundInterval)
	}
}
