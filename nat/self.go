package nat

import (
	"context"
	"net/netip"
	"slices"
	"time"
)

// What this machine knows of its own addresses: its interfaces, the
// mappings STUN answers reveal (and the NAT type they imply), and the
// candidates it offers and publishes in its record.

// interfaceTTL is how long a listing of the host's interfaces is reused.
// Listing them is a netlink dump (about a millisecond), and STUN answers
// consult them: read for every packet, they took a third of an idle
// agent's CPU with 20 peers. An address that appears is seen within this.
const interfaceTTL = 5 * time.Second

// interfaces returns the host's interfaces, listed at most once per
// interfaceTTL.
func (m *Manager) interfaces(now time.Time) ([]Interface, error) {
	m.ifMu.Lock()
	defer m.ifMu.Unlock()
	if m.ifaces != nil && now.Sub(m.ifacesAt) < interfaceTTL {
		return m.ifaces, nil
	}
	ifaces, err := m.cfg.Interfaces()
	if err != nil {
		return nil, err
	}
	m.ifaces, m.ifacesAt = ifaces, now
	return ifaces, nil
}

// discover sends plain binding requests to a few machines this one has a
// direct path to (and to configured STUN servers): the answers are this
// socket's mappings, from which the NAT type follows.
func (m *Manager) discover(t *peerTable, now time.Time) {
	m.discRound++
	m.lastDisc = now
	if m.discRound < 4 {
		m.nextDisc = now.Add(time.Duration(m.discRound) * 2 * time.Second)
	} else {
		m.nextDisc = now.Add(discoveryInterval)
	}
	servers := slices.Clone(m.cfg.STUNServers)
	for _, p := range t.sorted {
		if len(servers) >= maxDiscoveryServers+len(m.cfg.STUNServers) {
			break
		}
		li := p.liveInfo()
		if !li.relayed && li.endpoint.IsValid() && now.Sub(li.handshake) < relayFreshHandshake {
			servers = append(servers, li.endpoint)
		}
	}
	for _, s := range servers {
		msg, err := discoveryRequest()
		if err != nil {
			continue
		}
		m.pending[msg.TransactionID] = pendingTx{to: s, sent: now}
		if err := m.cfg.Socket.SendTo(msg.Raw, s); err == nil {
			m.stunStats.sent.Add(1)
		}
	}
}

// reclassifyEvery bounds how long a NAT type computed from observations
// that have only been refreshed since (no new server, no new mapping) is
// kept: aging may still change it, but nothing new can.
const reclassifyEvery = 5 * time.Second

// addObservation records one answer to a binding request. Every answered
// probe on a direct path carries one (a few a second with 20 peers, most
// of them a known server seeing a known mapping), so a repeat only
// refreshes its entry's time: Classify and Reflexive read the newest
// answer per server and per mapping, which a refresh keeps, and
// reclassifying (maps, sorting, the host's addresses) waits until
// something new arrives or reclassifyEvery has passed.
func (m *Manager) addObservation(server, mapped netip.AddrPort, now time.Time) {
	fresh, known := true, false
	for i := range m.obs {
		o := &m.obs[i]
		if o.Mapped == mapped && now.Sub(o.At) <= observationTTL {
			fresh = false
		}
		if o.Server == server && o.Mapped == mapped {
			o.At, known = now, true
		}
	}
	if !known {
		m.obs = append(m.obs, Observation{Server: server, Mapped: mapped, At: now})
	}
	m.obs = slices.DeleteFunc(m.obs, func(o Observation) bool { return now.Sub(o.At) > observationTTL })
	if len(m.obs) > maxObservations {
		// The oldest go first (a refresh does not move an entry).
		slices.SortFunc(m.obs, func(a, b Observation) int { return b.At.Compare(a.At) })
		m.obs = m.obs[:maxObservations]
	}
	if known && !fresh && now.Sub(m.classifiedAt) < reclassifyEvery {
		return // a known server saw a known mapping again
	}
	m.classifiedAt = now
	t := Classify(m.obs, m.localAddrs(), now)
	if t != m.natType {
		m.log.Info("NAT type", "type", t, "was", m.natType, "reflexive", Reflexive(m.obs, now))
		m.natType = t
	}
	if fresh {
		// A new mapping (a NAT reboot, a new address): peers without a
		// working direct path learn it now, through call-me-maybe.
		m.log.Info("new reflexive address", "mapped", mapped, "seen_by", server)
		m.pubSoon = true
		m.wakeBy(m.lastPub.Add(publishSoonAfter))
		for _, p := range m.table.Load().byID {
			if !p.directHealthy(now) {
				p.startProbing(now)
			}
		}
	}
}

func (m *Manager) localAddrs() []netip.Addr {
	ifaces, err := m.interfaces(time.Now())
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ap := range InterfaceCandidates(ifaces, Filter{}, m.cfg.ListenPort) {
		out = append(out, ap.Addr())
	}
	return out
}

// candidates is what this machine offers now: configured, interfaces,
// and the mappings seen from outside, newest first.
func (m *Manager) candidates(now time.Time) []netip.AddrPort {
	ifaces, err := m.interfaces(now)
	if err != nil {
		m.log.Debug("list interfaces", "err", err)
	}
	return Candidates(m.cfg.Public, InterfaceCandidates(ifaces, m.cfg.Filter, m.cfg.ListenPort), Reflexive(m.obs, now), m.cfg.Filter)
}

// publishable leaves out the mappings of a symmetric NAT: they are per
// destination, useless to anyone else, and would churn the record. (They
// still travel in call-me-maybe, which is cheap and current.)
func (m *Manager) publishable(now time.Time) []netip.AddrPort {
	ifaces, err := m.interfaces(now)
	if err != nil {
		m.log.Debug("list interfaces", "err", err)
	}
	var refl []netip.AddrPort
	if m.natType != TypeSymmetric {
		refl = Reflexive(m.obs, now)
	}
	return Candidates(m.cfg.Public, InterfaceCandidates(ifaces, m.cfg.Filter, m.cfg.ListenPort), refl, m.cfg.Filter)
}

// Candidates returns this machine's candidate endpoints as they are now.
func (m *Manager) Candidates() []netip.AddrPort {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.candidates(time.Now())
}

// maybePublish stores the candidates when the set changed (not its
// order): the record's history never shrinks, so it is written only when
// an address or a mapping really changes.
func (m *Manager) maybePublish(ctx context.Context, now time.Time) {
	m.lastPub, m.pubSoon = now, false
	if m.cfg.Publish == nil {
		return
	}
	cands := m.publishable(now)
	if sameSet(cands, m.published) {
		return
	}
	if err := m.cfg.Publish(ctx, cands); err != nil {
		m.log.Warn("publish candidates", "err", err)
		return
	}
	m.log.Info("candidates published", "candidates", cands)
	m.published = cands
}

func sameSet(a, b []netip.AddrPort) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
