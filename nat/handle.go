package nat

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
)

// STUNStats counts the STUN side of the WireGuard socket.
type STUNStats struct {
	Received      uint64 `json:"received"`
	Sent          uint64 `json:"sent"`
	Answered      uint64 `json:"answered"`    // plain binding requests answered (as a server)
	Garbage       uint64 `json:"garbage"`     // did not decode, or an unexpected kind
	Rejected      uint64 `json:"rejected"`    // failed authentication, stale, not ours
	Duplicate     uint64 `json:"duplicate"`   // seen before: a replay, or a copy through a second relay
	Unsolicite    uint64 `json:"unsolicited"` // responses to nothing we sent
	Limited       uint64 `json:"limited"`     // over a source's, a machine's or the server's rate, or a full queue
	Filtered      uint64 `json:"filtered"`    // call-me-maybe candidates dropped (not usable, not the sender's, too many)
	ProbesLimited uint64 `json:"probes_limited"`
}

type stunCounters struct {
	received, sent, answered, garbage, rejected, duplicate, unsolicited, limited, filtered, probesLimited atomic.Uint64
}

func (c *stunCounters) snapshot() STUNStats {
	return STUNStats{Received: c.received.Load(), Sent: c.sent.Load(), Answered: c.answered.Load(),
		Garbage: c.garbage.Load(), Rejected: c.rejected.Load(), Duplicate: c.duplicate.Load(), Unsolicite: c.unsolicited.Load(),
		Limited: c.limited.Load(), Filtered: c.filtered.Load(), ProbesLimited: c.probesLimited.Load()}
}

// handlePlain handles an admitted plain message: a discovery request to
// answer, or the answer to one of ours. Runs under m.mu.
func (m *Manager) handlePlain(pm plainMsg) {
	now := time.Now()
	switch pm.msg.Type {
	case stun.BindingRequest:
		m.answerDiscovery(pm.msg, pm.from)
	case stun.BindingSuccess:
		tx, ok := m.pending[pm.msg.TransactionID]
		if !ok || tx.peer != nil || tx.to != pm.from {
			m.stunStats.unsolicited.Add(1)
			return
		}
		delete(m.pending, pm.msg.TransactionID)
		if mapped, err := mappedAddress(pm.msg); err == nil {
			m.addObservation(pm.from, mapped, now)
		}
	}
}

// handleAuth handles an admitted message from another machine (already
// authenticated and new). Runs under m.mu.
func (m *Manager) handleAuth(a authMsg) {
	now := time.Now()
	p, msg, from := a.p, a.msg, a.from
	if !a.relayed {
		p.onDirectMessage(msg, from, now, bytes.Compare(m.self[:], p.key[:]) > 0)
	}
	switch msg.Type {
	case stun.BindingRequest:
		if a.relayed {
			return // probes test a direct path; through a relay they mean nothing
		}
		resp, err := authenticated(p.keys.probe, m.id, p.id,
			[]stun.Setter{stun.NewTransactionIDSetter(msg.TransactionID), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: net.IP(from.Addr().AsSlice()), Port: int(from.Port())}},
			textAttr{attrNAT, string(m.natType)})
		if err == nil && m.cfg.Socket.SendTo(resp.Raw, from) == nil {
			m.stunStats.sent.Add(1)
			p.noteSent(resp, from)
		}
		m.onProbeFrom(p, from, now)
	case stun.BindingSuccess:
		tx, ok := m.pending[msg.TransactionID]
		if !ok || a.relayed || tx.peer != p || tx.to != from {
			m.stunStats.unsolicited.Add(1)
			return
		}
		delete(m.pending, msg.TransactionID)
		if mapped, err := mappedAddress(msg); err == nil {
			m.addObservation(from, mapped, now)
		}
		if t := Type(textOf(msg, attrNAT)); t != "" {
			p.remoteNAT = t
		}
		m.onProbeOK(p, from, now.Sub(tx.sent), now)
	case callMeMaybe:
		via := ""
		if a.relayed {
			if r := m.table.Load().byAddr(from); r != nil && r != p {
				p.relayOK[r.id] = now
				via = r.name
			}
		}
		m.log.Debug("call-me-maybe received", "peer", p.name, "relayed", a.relayed, "via", via, "from", from)
		parsed, unread := parseCandidates(msg)
		cands, dropped := m.plausibleCandidates(p, parsed)
		m.stunStats.filtered.Add(uint64(unread + dropped))
		p.remoteCands = cands
		if t := Type(textOf(msg, attrNAT)); t != "" {
			p.remoteNAT = t
		}
		m.onCallMeMaybe(p, now)
	}
}

// answerDiscovery answers a plain binding request, as any STUN server
// would (admission has applied the rates; the answer is barely larger
// than the request, so the socket is no amplifier).
func (m *Manager) answerDiscovery(req *stun.Message, from netip.AddrPort) {
	resp, err := bindingSuccess(req, from, stun.Fingerprint)
	if err != nil {
		return
	}
	if m.cfg.Socket.SendTo(resp.Raw, from) == nil {
		m.stunStats.answered.Add(1)
	}
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
	wasDirect := p.path == PathDirect
	p.path, p.direct, p.directOK, p.pathSince, p.lastDirectTx = PathDirect, addr, now, now, now
	p.echo = echoState{} // stamps sent to or heard from another endpoint prove nothing here
	p.probing, p.failedSearches = false, 0
	// The packet path learns the new endpoint now, not at the next poll:
	// p may relay at once, and packets sealed for p as a relay find it.
	li := p.liveInfo()
	li.direct, li.endpoint, li.relayed = true, addr, false
	p.live.Store(&li)
	m.table.Load().reindexAddrs()
	if !wasDirect {
		m.pollSoon = true
		m.wakeBy(now.Add(pollSoonAfter))
		m.firstHandshake(p, addr.String())
		m.relayBack(m.table.Load(), p, now)
		// A new direct peer is a new vantage point: while the NAT type is
		// still unknown (one server answered so far, as for a machine
		// behind a symmetric NAT that reached only its seed in its first
		// rounds), ask it now rather than at the next 30 s round.
		if m.natType == TypeUnknown && now.Sub(m.lastDisc) >= time.Second {
			m.nextDisc = now
		}
	}
}

// relayBack: r has just become directly reachable, so it may relay again.
// Peers without a direct path re-check at once instead of waiting for
// their next rotation or search: those rotating take r if it is a relay
// candidate now, those whose search is backing off search again.
func (m *Manager) relayBack(t *peerTable, r *peer, now time.Time) {
	for _, p := range t.sorted {
		if p == r || p.path == PathDirect {
			continue
		}
		if p.path == PathRotating {
			m.fallback(t, p, now)
		}
		if !p.probing && p.nextReprobe.After(now) {
			p.nextReprobe = now
		}
		switch {
		case p.probing && p.lastCMMRelays == 0:
			// The last one reached no relay (this machine had no direct
			// path yet): r is the first, so send now, not at the next
			// tick or a second after the last.
			m.sendCallMeMaybe(t, p, now)
			p.nextCMM = now.Add(callMeMaybeInterval)
		case p.probing && now.Sub(p.lastCMM) >= 100*time.Millisecond:
			p.nextCMM = now // through r too: it may prove r as a relay for p
		}
	}
}

// onProbeFrom: the peer probed us from addr. That address is a candidate
// (peer-reflexive, in ICE's words), and probing it back right away is what
// opens this side's NAT for the peer's next probe.
func (m *Manager) onProbeFrom(p *peer, addr netip.AddrPort, now time.Time) {
	if !usableCandidate(addr) {
		return
	}
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
	// The first one from p is answered whatever the limit: ours before
	// it went out while p did not know this machine yet (a newcomer and
	// a member each learn of the other at their own time), and p dropped
	// them; waiting for the next would cost a second.
	if now.Sub(p.lastCMM) > callMeMaybeInterval/2 || !p.heardCMM {
		m.sendCallMeMaybe(m.table.Load(), p, now)
	}
	p.heardCMM = true
	if !p.directHealthy(now) {
		p.startProbing(now)
		p.nextRound = now.Add(probeRoundInterval)
	}
	// A relay has just been proven to reach p: the search takes it now
	// rather than at the next tick (and goes on; a direct answer takes
	// over).
	t := m.table.Load()
	if p.path == PathProbing && p.probing && now.Sub(p.probeStart) >= relayWhileSearching && p.anyProven(t, now) {
		m.fallback(t, p, now)
	}
}
