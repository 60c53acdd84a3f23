package nat

import (
	"bytes"
	"net/netip"
	"sort"
	"time"

	"github.com/pion/stun/v3"

	"github.com/uncloud-mesh/uncloud/tun"
)

// step advances one peer's path selection. Runs under m.mu.
//
// Every search probes all candidates at once, every half second, for a
// few seconds, and asks the peer (through a relay, and directly) to probe
// back at the same time, which is what opens both NATs. The first pair
// that answers wins. When none does, the peer is reached through a relay,
// or, with no relay, by KubeSpan's rotation; the direct path is searched
// again every ten seconds and taken as soon as it answers.
func (m *Manager) step(t *peerTable, p *peer, now time.Time) {
	m.dueHandshake(p, now)
	switch p.path {
	case PathDirect:
		if now.Sub(p.lastDirectTx) >= directProbeInterval {
			m.sendProbe(p, p.direct, now)
			p.lastDirectTx = now
		}
		if li := p.liveInfo(); p.directHealthy(now) && li.relayed {
			// WireGuard roams to where a peer's packets come from, and
			// a few of them sent through a relay just before the peer
			// found the direct path arrive after this side chose it:
			// WireGuard was left on the relay while this side counted
			// the pair direct (e2e TestNATTraversal: b↔e relayed for
			// the test's whole 2 minutes). The direct path is set again.
			m.log.Debug("WireGuard roamed to a relay; back to the direct path", "peer", p.name, "endpoint", p.direct, "via", li.via)
			if err := m.setEndpoint(p, p.direct.String()); err != nil {
				m.log.Debug("direct path", "peer", p.name, "err", err)
			}
		}
		if !p.directHealthy(now) {
			// Move to a relay at once (traffic keeps flowing) and search
			// for a direct path meanwhile; the first answer brings it back.
			m.log.Info("direct path lost, relaying while searching", "peer", p.name, "endpoint", p.direct,
				"last_answer", now.Sub(p.directOK).Round(time.Millisecond))
			p.markDirect(false)
			p.searchStart = now
			p.startProbing(now)
			m.fallback(t, p, now)
		}
	case PathRelayed:
		relay := t.byID[p.relay]
		switch {
		case relay == nil || !relay.directHealthy(now):
			m.log.Info("relay gone, choosing another", "peer", p.name)
			m.fallback(t, p, now)
		case now.Sub(p.relayAt) > relayHandshakeTimeout && p.liveInfo().rx == p.relayRx:
			// Keepalives every 25 s: silence means the relay does not
			// get through, whatever it says.
			m.log.Info("nothing received through relay, trying another", "peer", p.name, "relay", relay.name)
			p.badRelays[p.relay] = now
			m.fallback(t, p, now)
		case !p.provenRelay(p.relay, now) && p.anyProven(t, now):
			m.fallback(t, p, now) // a relay proven to reach both ends beats one that is not
		case !relay.preferred && p.preferredProven(t, now):
			// A preferred relay proven after the pair took another (the
			// search relays within half a second, sometimes before the
			// preferred one has carried a call-me-maybe).
			m.fallback(t, p, now)
		}
	case PathProbing:
		// A new peer with no path yet is reached through a relay while
		// the search goes on (the first direct answer takes over): a
		// pair behind NATs that cannot meet (or not yet) is up as soon
		// as a relay is proven, not at the end of the search. Waiting
		// for a direct answer first (0.4 s, on the 250 ms tick) cost a
		// join half a second; a relay for the few hundred milliseconds
		// before the direct path costs a member a few packets.
		// Only through a relay proven to reach both ends (the peer's
		// call-me-maybe came through it): an unproven one is for when the
		// search has failed, not to race it.
		if p.probing && now.Sub(p.probeStart) >= relayWhileSearching && p.anyProven(t, now) {
			m.fallback(t, p, now)
		}
	case PathRotating:
		// A relay that came back is taken at once, not at the next
		// rotation (relayBack does it when the relay's path returns;
		// this catches one that was already there).
		if now.After(p.nextRotate) || len(m.relayCandidates(t, p, now)) > 0 {
			m.rotate(t, p, now)
		}
	}
	if !p.probing && p.path != PathDirect && p.path != PathProbing && now.After(p.nextReprobe) {
		p.startProbing(now)
	}
	if !p.probing {
		return
	}
	if !now.Before(p.nextCMM) {
		m.sendCallMeMaybe(t, p, now)
		p.nextCMM = now.Add(callMeMaybeInterval)
	}
	if p.nextCMM.Sub(now) < tickInterval {
		m.wakeBy(p.nextCMM) // one resent sooner (a bounce) goes at its time, not at a tick
	}
	if !now.Before(p.nextRound) {
		for _, c := range p.allCandidates() {
			m.sendProbe(p, c, now)
		}
		// In a search's first second, a round every tick: a peer that
		// did not know this machine yet (a member learns of a newcomer
		// tens of milliseconds after the newcomer's first probes, and
		// drops them) is probed again 250 ms later, not 500. The slack
		// keeps a round from slipping to the tick after.
		interval := probeRoundInterval
		if now.Sub(p.probeStart) < quickRoundsFor {
			interval = tickInterval
		}
		p.nextRound = now.Add(interval - tickInterval/10)
	}
	if now.Sub(p.probeStart) >= probeTimeout {
		p.probing = false
		// Search again soon at first (the other side, its record or a
		// relay may just be coming up), then every reprobeInterval.
		p.failedSearches++
		p.nextReprobe = now.Add(min(reprobeInterval, time.Second<<min(p.failedSearches, 4)))
		if !p.directHealthy(now) {
			m.fallback(t, p, now)
		}
	}
}

// sendProbe sends one authenticated binding request to a candidate.
func (m *Manager) sendProbe(p *peer, addr netip.AddrPort, now time.Time) {
	if !usableCandidate(addr) {
		return
	}
	if !p.probeLimit.AllowN(now, 1) {
		m.stunStats.probesLimited.Add(1)
		return
	}
	var extra []stun.Setter
	if e := p.echoSetter(addr); e != nil {
		extra = append(extra, e)
	}
	msg, err := authenticated(p.keys.probe, m.id, p.id, []stun.Setter{stun.TransactionID, stun.BindingRequest}, extra...)
	if err != nil {
		return
	}
	p.noteSent(msg, addr)
	m.pending[msg.TransactionID] = pendingTx{peer: p, to: addr, sent: now}
	if err := m.cfg.Socket.SendTo(msg.Raw, addr); err == nil {
		m.stunStats.sent.Add(1)
	}
}

// sendCallMeMaybe tells the peer to probe this machine's candidates now:
// through a relay (a third machine that reaches both, so it works before
// any direct path exists) and directly to its candidates.
func (m *Manager) sendCallMeMaybe(t *peerTable, p *peer, now time.Time) {
	p.lastCMM, p.lastCMMRelays = now, 0
	msg, err := authenticated(p.keys.probe, m.id, p.id, []stun.Setter{stun.TransactionID, callMeMaybe},
		candidatesAttr(m.candidates(now)), textAttr{attrNAT, string(m.natType)})
	if err != nil {
		return
	}
	sent := 0
	for _, r := range m.relayCandidates(t, p, now) {
		relay := r.liveInfo().endpoint
		pkt := m.sealFor(nil, r, relayForward, p.id, msg.Raw)
		if m.cfg.Socket.SendTo(pkt, relay) == nil {
			sent++
		}
		if sent == 2 {
			break
		}
	}
	p.lastCMMRelays = sent
	cands := p.allCandidates()
	for _, c := range cands {
		_ = m.cfg.Socket.SendTo(msg.Raw, c)
	}
	m.log.Debug("call-me-maybe sent", "peer", p.name, "relays", sent, "direct", len(cands))
}

// relayCandidates are the machines that could relay to p: this machine
// has a healthy direct path to them. Those that lately said they cannot
// reach p (or carried nothing) come last, not never: at startup a relay may not have met p yet, and a doubtful relay
// beats none (it forwards only to machines it reaches directly, and says
// so when it cannot, so a doubtful one costs a round trip, never a relay
// through a relay). Otherwise preferred relays first, then those proven
// to reach p directly (p's call-me-maybe came through them lately), then
// by round-trip time.
func (m *Manager) relayCandidates(t *peerTable, p *peer, now time.Time) []*peer {
	var out []*peer
	for _, r := range t.sorted {
		if r != p && r.directHealthy(now) {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if bi, bj := p.badRelay(out[i].id, now), p.badRelay(out[j].id, now); bi != bj {
			return bj
		}
		if out[i].preferred != out[j].preferred {
			return out[i].preferred
		}
		if pi, pj := p.provenRelay(out[i].id, now), p.provenRelay(out[j].id, now); pi != pj {
			return pi
		}
		return out[i].rtt < out[j].rtt
	})
	return out
}

// fallback moves p to the best relay, or to rotation when there is none.
func (m *Manager) fallback(t *peerTable, p *peer, now time.Time) {
	cands := m.relayCandidates(t, p, now)
	if p.path == PathRelayed && len(cands) > 0 {
		best := cands[0]
		for _, r := range cands {
			good := !p.badRelay(r.id, now)
			better := best.preferred && !r.preferred && p.provenRelay(best.id, now)
			if r.id == p.relay && good && (p.provenRelay(r.id, now) || !p.provenRelay(best.id, now)) && !better {
				return // the relay in use is still good, and none better is proven
			}
		}
	}
	for _, r := range cands {
		ep := &tun.RelayEndpoint{Relay: r.liveInfo().endpoint, Peer: p.key}
		if err := m.setEndpoint(p, ep.String()); err != nil {
			m.log.Warn("relay endpoint", "err", err)
			return
		}
		if p.path != PathRelayed {
			m.firstHandshake(p, ep.String())
		}
		if p.path != PathRelayed || p.relay != r.id {
			m.log.Info("relayed path", "peer", p.name, "via", r.name, "after", now.Sub(p.searchStart).Round(time.Millisecond))
		}
		if p.firstRelay == 0 {
			p.firstRelay = now.Sub(p.searchStart)
		}
		p.path, p.relay, p.relayAt, p.relayRx, p.pathSince = PathRelayed, r.id, now, p.liveInfo().rx, now
		return
	}
	if p.path != PathRotating {
		m.log.Info("no direct path and no relay: rotating endpoints", "peer", p.name)
		p.path, p.pathSince = PathRotating, now
		p.nextRotate = now
	}
}

// rotate is KubeSpan's fallback: point WireGuard at the next candidate
// and give it rotateInterval to handshake. It also hops from a relay to
// rotation only when no relay is left.
func (m *Manager) rotate(t *peerTable, p *peer, now time.Time) {
	p.nextRotate = now.Add(rotateInterval)
	if len(m.relayCandidates(t, p, now)) > 0 {
		m.fallback(t, p, now)
		return
	}
	if hs := p.liveInfo().handshake; now.Sub(hs) < rotateInterval {
		return // the current endpoint works
	}
	cands := p.allCandidates()
	if len(cands) == 0 {
		return
	}
	p.rotateIdx = (p.rotateIdx + 1) % len(cands)
	if err := m.setEndpoint(p, cands[p.rotateIdx].String()); err != nil {
		m.log.Debug("rotate", "err", err)
	}
}

func (m *Manager) onUnreachable(n unreachableNote) {
	t := m.table.Load()
	p := t.byID[n.dst]
	if p == nil {
		return
	}
	now := time.Now()
	// A peer in a search's first seconds: the relay does not reach it
	// yet (a newcomer finds its first direct paths within a few hundred
	// milliseconds), so the call-me-maybe that bounced is sent again
	// soon, not a second later. Also when this side has a relay proven
	// already (and may use it): the peer has none until one of ours
	// comes through.
	if p.probing && !p.directHealthy(now) && now.Sub(p.probeStart) < 2*time.Second {
		if soon := now.Add(cmmAfterUnreachable); p.nextCMM.After(soon) {
			p.nextCMM = soon
			m.wakeBy(soon)
		}
	}
	at, known := p.badRelays[n.relay]
	p.badRelays[n.relay] = now
	if known && now.Sub(at) < badRelayFor {
		return // already acted on: a down peer must not make the relay's notes a log flood
	}
	if p.path == PathRelayed && p.relay == n.relay {
		if r := t.byID[n.relay]; r != nil {
			m.log.Info("relay cannot reach peer, trying another", "peer", p.name, "relay", r.name)
		}
		m.fallback(t, p, now)
	}
}

// provenRelay reports whether p's call-me-maybe came through relay r
// within relayProvenFor: r reaches p directly (it forwards to no other),
// and this machine reaches r directly (it is a relay candidate).
func (p *peer) provenRelay(r keyID, now time.Time) bool {
	at, ok := p.relayOK[r]
	return ok && now.Sub(at) < relayProvenFor
}

// badRelay reports whether relay r said lately that it cannot reach p (or
// carried nothing), and has not carried p's call-me-maybe since: during a
// formation a relay bounces what it is sent until it reaches p itself, a
// few hundred milliseconds, and that must not keep it last for 30 s.
func (p *peer) badRelay(r keyID, now time.Time) bool {
	at, ok := p.badRelays[r]
	if !ok || now.Sub(at) >= badRelayFor {
		return false
	}
	return !p.relayOK[r].After(at)
}

// preferredProven reports whether a preferred relay candidate of p is
// proven.
func (p *peer) preferredProven(t *peerTable, now time.Time) bool {
	for id := range p.relayOK {
		if r := t.byID[id]; r != nil && r != p && r.preferred && r.directHealthy(now) && p.provenRelay(id, now) && !p.badRelay(id, now) {
			return true
		}
	}
	return false
}

// anyProven reports whether some relay candidate of p is proven.
func (p *peer) anyProven(t *peerTable, now time.Time) bool {
	for id := range p.relayOK {
		if r := t.byID[id]; r != nil && r != p && r.directHealthy(now) && p.provenRelay(id, now) {
			return true
		}
	}
	return false
}

// firstHandshake: a path to p has just been found (an answered probe: p
// knows this machine's key and the endpoint works; or a relay). If
// WireGuard never completed a handshake with p, its first initiation went
// nowhere (p did not know this machine yet, or there was no endpoint), and
// WireGuard would wait 5 s before the next. One side of the pair, the one
// with the lower key, starts a fresh one now: both at once would cross
// (each overwriting its own initiation with the other's), which costs the
// same 5 s.
//
// Not twice within rehandshakeGap: a pair that is relayed and then finds
// its direct path a millisecond later (a call-me-maybe through a proven
// relay brings both) would send a second initiation that overwrites the
// first's state, so the answer to the first is invalid, while the peer
// drops the second as a replay (WireGuard's timestamps are coarser than a
// millisecond): no session, and WireGuard's 5 s wait after all. The first
// initiation's answer comes back whichever path it takes.
//
// The restart waits until rehandshakeDelay after WireGuard's own
// initiations to p (when p was added, and from wgRetryAfter on, its
// 5 s retry): a path found while one of those is in flight would kill
// the session it is completing, and the peer would drop the new
// initiation as a replay of the first (a flood within 20 ms). Whatever
// path the restart takes: a member's first initiation to a public
// newcomer went straight to it, and a restart through a relay found
// 2 ms later was dropped (a 5.2 s join). Otherwise the restart goes at
// once, on the loop's next turn: the path event, not a tick, starts it.
func (m *Manager) firstHandshake(p *peer, endpoint string) {
	if !p.liveInfo().handshake.IsZero() || bytes.Compare(m.self[:], p.key[:]) > 0 {
		return
	}
	if p.rehandshakeDue.IsZero() {
		now := time.Now()
		due := now
		if since := now.Sub(p.added); since < rehandshakeDelay {
			due = p.added.Add(rehandshakeDelay)
		} else if since >= wgRetryAfter {
			due = now.Add(rehandshakeDelay)
		}
		p.rehandshakeDue = due
		m.wakeBy(due)
	}
	p.rehandshakeEP = endpoint // the newest path's
}

// dueHandshake restarts p's handshake if firstHandshake asked for it and
// its time has come (tun.Device.Rehandshake leaves a peer that has a
// session alone).
func (m *Manager) dueHandshake(p *peer, now time.Time) {
	if p.rehandshakeDue.IsZero() {
		return
	}
	if !p.liveInfo().handshake.IsZero() {
		p.rehandshakeDue = time.Time{} // a session came meanwhile
		return
	}
	if now.Before(p.rehandshakeDue) {
		m.wakeBy(p.rehandshakeDue)
		return
	}
	p.rehandshakeDue = time.Time{}
	if !p.rehandshakeAt.IsZero() && now.Sub(p.rehandshakeAt) < rehandshakeGap {
		return
	}
	p.rehandshakeAt = now
	endpoint := p.rehandshakeEP
	started, err := m.cfg.Device.Rehandshake(p.key, endpoint)
	switch {
	case err != nil:
		m.log.Debug("first handshake", "peer", p.name, "err", err)
	case started:
		m.log.Debug("no handshake yet: initiating one now", "peer", p.name, "endpoint", endpoint, "try", p.rehandshakes+1)
		// The restart itself can be lost the same way: WireGuard's own
		// initiation, held up on a busy peer, reached it within 20 ms of
		// the restart's, so the peer answered the first (whose state the
		// restart had replaced) and dropped the second as a flood
		// (bench/formation: a 21st machine's handshake with one of 20
		// took 5.7–6.1 s in 3 of 8 runs). So while no session follows,
		// the restart is repeated rehandshakeGap later, a few times,
		// before leaving it to WireGuard's 5 s retry.
		if p.rehandshakes < rehandshakeRepeats {
			p.rehandshakes++
			p.rehandshakeDue = now.Add(rehandshakeGap)
			m.wakeBy(p.rehandshakeDue)
		}
	}
}
