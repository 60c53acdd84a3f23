package nat

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/tun"
)

// The relay header, 44 bytes in front of an opaque WireGuard datagram (or
// a STUN control message) on one hop:
//
//	0      marker 0xE1 (tun.RelayMarker)
//	1      type: forward (to the relay), deliver (from the relay),
//	       unreachable (the relay cannot reach dst)
//	2..4   zero
//	4..12  hop: the machine that sealed this hop (src, or the relay)
//	12..20 far: forward: dst, the machine the datagram is for;
//	       deliver: src, the machine that sent it;
//	       unreachable: dst, the machine the relay cannot reach
//	20..28 seq: the hop's sequence number (freshness.go): the second it
//	       was sealed in, and a count within that second
//	28..44 MAC: BLAKE2s-128 over bytes 0..28 and the payload, keyed with
//	       the relay key of the hop's two machines
//
// The third machine of each type is the receiver itself (forward: src is
// the hop; deliver: dst is the receiver; unreachable: src is the
// receiver), bound by the MAC's key, which only the hop and the receiver
// hold, so it is not sent: that leaves room for seq in the same 44 bytes
// (the tunnel MTU reserves exactly that much).
//
// The MAC lets a relay forward only for members of its network and lets
// the receiver trust the relay's word about src; the payload itself stays
// WireGuard's, encrypted and authenticated end to end. seq under the MAC
// makes every sealed packet good once: a copy replayed from any address,
// at once or later, is dropped and counted (replayed, or stale once its
// second is out of the window), so a captured packet cannot spend its
// sender's relay budget or make a relay send anything.
const (
	relayHeaderLen = meshaddr.RelayOverhead // the tunnel MTU leaves room for it
	relaySeqOff    = 20
	relayMACOff    = 28

	relayForward     = 1
	relayDeliver     = 2
	relayUnreachable = 3
)

type relayHeader struct {
	typ           byte
	src, dst, hop keyID
	seq           uint64
}

// far is the machine named on the wire besides the hop.
func (h relayHeader) far() keyID {
	if h.typ == relayDeliver {
		return h.src
	}
	return h.dst
}

func relayMAC(key *[32]byte, head, payload []byte) [16]byte {
	h, _ := blake2s.New128(key[:]) // a 32-byte key is always accepted
	h.Write(head)
	h.Write(payload)
	var mac [16]byte
	copy(mac[:], h.Sum(nil))
	return mac
}

// sealRelay appends a sealed relay packet to dst.
func sealRelay(dst []byte, h relayHeader, key *[32]byte, payload []byte) []byte {
	start := len(dst)
	far := h.far()
	dst = append(dst, tun.RelayMarker, h.typ, 0, 0)
	dst = append(dst, h.hop[:]...)
	dst = append(dst, far[:]...)
	dst = binary.BigEndian.AppendUint64(dst, h.seq)
	mac := relayMAC(key, dst[start:start+relayMACOff], payload)
	dst = append(dst, mac[:]...)
	return append(dst, payload...)
}

var (
	errRelayShort  = errors.New("relay packet too short")
	errRelayHeader = errors.New("malformed relay header")
)

// parseRelay reads the header without checking the MAC (the key depends
// on the hop it names); self is the receiver, the header's implied third
// machine.
func parseRelay(pkt []byte, self keyID) (relayHeader, []byte, error) {
	if len(pkt) < relayHeaderLen {
		return relayHeader{}, nil, errRelayShort
	}
	if pkt[0] != tun.RelayMarker || pkt[2] != 0 || pkt[3] != 0 || pkt[1] < relayForward || pkt[1] > relayUnreachable {
		return relayHeader{}, nil, errRelayHeader
	}
	var h relayHeader
	var far keyID
	h.typ = pkt[1]
	copy(h.hop[:], pkt[4:12])
	copy(far[:], pkt[12:20])
	h.seq = binary.BigEndian.Uint64(pkt[relaySeqOff:relayMACOff])
	switch h.typ {
	case relayForward:
		h.src, h.dst = h.hop, far
	case relayDeliver:
		h.src, h.dst = far, self
	case relayUnreachable:
		h.src, h.dst = self, far
	}
	return h, pkt[relayHeaderLen:], nil
}

func verifyRelay(pkt []byte, key *[32]byte) bool {
	mac := relayMAC(key, pkt[:relayMACOff], pkt[relayHeaderLen:])
	return subtle.ConstantTimeCompare(mac[:], pkt[relayMACOff:relayHeaderLen]) == 1
}

// RelayStats counts relay traffic through and to this machine.
type RelayStats struct {
	Forwarded     uint64 `json:"forwarded"`      // datagrams passed on as a relay
	ForwardedByte uint64 `json:"forwarded_byte"` // their bytes
	Delivered     uint64 `json:"delivered"`      // relayed datagrams received here
	Sent          uint64 `json:"sent"`           // datagrams this machine sent through a relay
	Dropped       uint64 `json:"dropped"`        // malformed, unauthenticated, not ours
	Replayed      uint64 `json:"replayed"`       // authentic, but seen before (or too old for the window)
	Stale         uint64 `json:"stale"`          // authentic, but sealed outside the clock window
	RateLimited   uint64 `json:"rate_limited"`   // over a sender's relay budget
	NoRoute       uint64 `json:"no_route"`       // destination not reachable from here
}

type relayCounters struct {
	forwarded, forwardedByte, delivered, sent, dropped, replayed, stale, rateLimited, noRoute atomic.Uint64
}

func (c *relayCounters) snapshot() RelayStats {
	return RelayStats{
		Forwarded: c.forwarded.Load(), ForwardedByte: c.forwardedByte.Load(), Delivered: c.delivered.Load(),
		Sent: c.sent.Load(), Dropped: c.dropped.Load(), Replayed: c.replayed.Load(), Stale: c.stale.Load(),
		RateLimited: c.rateLimited.Load(), NoRoute: c.noRoute.Load(),
	}
}

// relayFreshHandshake is how recent a relay's handshake with the
// destination must be for it to forward: WireGuard rekeys every two
// minutes, so an older handshake means the destination is gone.
const relayFreshHandshake = 180 * time.Second

// sealFor seals one hop from this machine to the machine `to`, with the
// next sequence number of that pair; far is the machine the header names
// besides the hop (see the layout).
func (m *Manager) sealFor(dst []byte, to *peer, typ byte, far keyID, payload []byte) []byte {
	h := relayHeader{typ: typ, hop: m.id, seq: to.sendSeq.next(time.Now())}
	switch typ {
	case relayForward:
		h.src, h.dst = m.id, far
	case relayDeliver:
		h.src, h.dst = far, to.id
	case relayUnreachable:
		h.src, h.dst = to.id, far
	}
	return sealRelay(dst, h, &to.keys.relay, payload)
}

// Seal implements tun.RelayHandler: a WireGuard datagram for ep.Peer,
// through ep.Relay.
func (m *Manager) Seal(dst, payload []byte, ep *tun.RelayEndpoint) ([]byte, error) {
	t := m.table.Load()
	relay := t.byAddr(ep.Relay)
	if relay == nil {
		return nil, errors.New("relay is not a known machine")
	}
	m.relayStats.sent.Add(1)
	return m.sealFor(dst, relay, relayForward, idOf(ep.Peer), payload), nil
}

// Open implements tun.RelayHandler. It runs on the Bind's receive path.
func (m *Manager) Open(pkt []byte, from netip.AddrPort) ([]byte, conn.Endpoint, bool) {
	h, payload, err := parseRelay(pkt, m.id)
	if err != nil {
		m.relayStats.dropped.Add(1)
		return nil, nil, false
	}
	t := m.table.Load()
	hop := t.byID[h.hop]
	if hop == nil || !verifyRelay(pkt, &hop.keys.relay) {
		m.relayStats.dropped.Add(1)
		return nil, nil, false
	}
	// Authentic: now it must also be new. Checked after the MAC, so a
	// forged packet cannot advance a window.
	switch hop.recvWindow.check(h.seq, time.Now()) {
	case stale:
		m.relayStats.stale.Add(1)
		return nil, nil, false
	case replayed:
		m.relayStats.replayed.Add(1)
		return nil, nil, false
	}
	switch h.typ {
	case relayForward:
		m.forward(t, h, hop, pkt, payload)
		return nil, nil, false
	case relayDeliver:
		src := t.byID[h.src]
		if src == nil {
			m.relayStats.dropped.Add(1)
			return nil, nil, false
		}
		if tun.ClassifyPacket(payload) == tun.KindSTUN {
			m.admitControl(payload, from, src)
			return nil, nil, false
		}
		m.relayStats.delivered.Add(1)
		return payload, src.relayEndpoint(from), true
	case relayUnreachable:
		select {
		case m.unreachable <- unreachableNote{relay: hop.id, dst: h.dst}:
		default:
		}
		return nil, nil, false
	}
	return nil, nil, false
}

// forward passes a datagram on, as a relay, when both ends are members,
// the destination has a fresh direct path from here and the sender is
// within its budget. The header is rewritten in place (same length) and
// sent from the receive path before the buffer is reused.
func (m *Manager) forward(t *peerTable, h relayHeader, hop *peer, pkt, payload []byte) {
	if m.cfg.DisableRelay {
		m.relayStats.dropped.Add(1)
		return
	}
	dst := t.byID[h.dst]
	live := dst.liveInfo()
	// Only to a machine this one reaches directly by its own path search
	// (not merely through an endpoint WireGuard holds, which may be a
	// stale or roamed one): a relay never relays through another relay.
	if dst == nil || dst == hop || live.relayed || !live.direct || !live.endpoint.IsValid() || time.Since(live.handshake) > relayFreshHandshake {
		m.relayStats.noRoute.Add(1)
		if hop.notify.Allow() {
			note := m.sealFor(nil, hop, relayUnreachable, h.dst, nil)
			if ep := hop.liveInfo().endpoint; ep.IsValid() {
				_ = m.cfg.Socket.SendTo(note, ep)
			}
		}
		return
	}
	if !hop.limiter.AllowN(time.Now(), len(pkt)) {
		m.relayStats.rateLimited.Add(1)
		return
	}
	out := m.sealFor(pkt[:0], dst, relayDeliver, h.src, payload)
	if err := m.cfg.Socket.SendTo(out, live.endpoint); err != nil {
		m.relayStats.noRoute.Add(1)
		return
	}
	m.relayStats.forwarded.Add(1)
	m.relayStats.forwardedByte.Add(uint64(len(payload)))
}
