package nat

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/time/rate"
)

// Admission: every STUN message on the WireGuard socket (and every one a
// relay delivers) is sorted on the receive path, before it takes a place
// in any queue, into two classes with separate queues and budgets:
//
//   - authenticated messages between machines (probes, their answers,
//     call-me-maybe): checked here (the pair's MESSAGE-INTEGRITY, the
//     timestamp, never seen before), then admitted within a budget per
//     sending machine into their own queue, which the manager loop always
//     serves first. Nobody without a member's key can put anything in it,
//     and a member can only spend its own budget, so path search between
//     two members never waits behind a flood.
//   - plain binding requests (endpoint discovery, which any STUN server
//     answers) and answers to this machine's own discovery: a token bucket
//     per source address (a bounded LRU of them), and a global rate that
//     members' own endpoints are exempt from, into a small queue of their
//     own. A flood from one source is held to that source's rate; one from
//     many sources fills only this queue.
const (
	authQueueLen     = 256
	plainQueueLen    = 64
	peerControlRate  = 100 // authenticated messages per second per machine:
	peerControlBurst = 200 // a search sends it at most ~40/s (16 candidates, twice a second)
	peerProbeRate    = 40  // probes per second this machine sends one machine,
	peerProbeBurst   = 40  // however many candidates it (or a rogue) names
	sourceRate       = 5   // plain requests per second per source address
	sourceBurst      = 10
	sourceTableLen   = 4096 // source addresses remembered (LRU)
	serverRate       = 200  // plain requests answered per second, all sources
	serverBurst      = 100
	// maxSeenPerPeer bounds the transaction IDs remembered per machine: its
	// budget over the clock window is 100/s × 60 s, and a legitimate
	// machine sends under a tenth of that.
	maxSeenPerPeer = 8192
)

// seenKey is one authenticated message: a request and its answer share a
// transaction ID, so the class is part of the key.
type seenKey struct {
	tx  [stun.TransactionIDSize]byte
	typ stun.MessageType
}

// authMsg is an admitted authenticated message.
type authMsg struct {
	p       *peer
	from    netip.AddrPort
	msg     *stun.Message
	relayed bool // delivered by a relay, from p
}

// plainMsg is an admitted plain STUN message.
type plainMsg struct {
	from netip.AddrPort
	msg  *stun.Message
}

// HandleControl implements tun.ControlHandler: a STUN datagram from the
// socket. It runs on the receive path and never blocks.
func (m *Manager) HandleControl(data []byte, from netip.AddrPort) { m.admitControl(data, from, nil) }

// admitControl sorts one STUN message (relayed: delivered by a relay from
// that machine) into its queue, or drops and counts it.
func (m *Manager) admitControl(data []byte, from netip.AddrPort, relayed *peer) {
	m.stunStats.received.Add(1)
	msg := &stun.Message{Raw: append([]byte(nil), data...)} // data is the socket's buffer
	if err := msg.Decode(); err != nil {
		m.stunStats.garbage.Add(1)
		return
	}
	now := time.Now()
	fromID, toID, claims := parseUsername(msg)
	if !claims {
		if relayed != nil || (msg.Type != stun.BindingRequest && msg.Type != stun.BindingSuccess) {
			m.stunStats.garbage.Add(1) // plain STUN never travels through a relay
			return
		}
		if !m.allowPlain(from, now) {
			m.stunStats.limited.Add(1)
			return
		}
		select {
		case m.plainQ <- plainMsg{from: from, msg: msg}:
		default:
			m.stunStats.limited.Add(1)
		}
		return
	}
	if msg.Type != stun.BindingRequest && msg.Type != stun.BindingSuccess && msg.Type != callMeMaybe {
		m.stunStats.garbage.Add(1)
		return
	}
	p := m.table.Load().byID[fromID]
	if toID != m.id || p == nil || (relayed != nil && relayed != p) {
		m.stunStats.rejected.Add(1)
		return
	}
	if err := checkAuthenticated(msg, p.keys.probe, now); err != nil {
		m.stunStats.rejected.Add(1)
		return
	}
	switch p.markSeen(seenKey{msg.TransactionID, msg.Type}, now) {
	case seenBefore:
		m.stunStats.duplicate.Add(1)
		return
	case seenFull:
		m.stunStats.limited.Add(1)
		return
	}
	if !p.ctlBudget.AllowN(now, 1) {
		m.stunStats.limited.Add(1)
		return
	}
	select {
	case m.authQ <- authMsg{p: p, from: from, msg: msg, relayed: relayed != nil}:
	default:
		m.stunStats.limited.Add(1)
	}
}

// allowPlain applies the per-source bucket, then the global rate, from
// which the current endpoints of members are exempt (their discovery must
// not starve when strangers flood).
func (m *Manager) allowPlain(from netip.AddrPort, now time.Time) bool {
	if !m.sources.allow(from.Addr(), now) {
		return false
	}
	if m.table.Load().byAddr(from) != nil {
		return true
	}
	return m.serverLimit.AllowN(now, 1)
}

type seenVerdict uint8

const (
	seenNew seenVerdict = iota
	seenBefore
	seenFull
)

// markSeen records an authenticated message of this peer; entries older
// than the clock window (beyond which the timestamp check refuses a copy
// anyway) are forgotten.
func (p *peer) markSeen(k seenKey, now time.Time) seenVerdict {
	p.seenMu.Lock()
	defer p.seenMu.Unlock()
	if _, dup := p.seen[k]; dup {
		return seenBefore
	}
	if len(p.seen) >= maxSeenPerPeer {
		p.sweepSeenLocked(now)
		if len(p.seen) >= maxSeenPerPeer {
			return seenFull
		}
	}
	p.seen[k] = now
	return seenNew
}

func (p *peer) sweepSeen(now time.Time) {
	p.seenMu.Lock()
	defer p.seenMu.Unlock()
	p.sweepSeenLocked(now)
}

func (p *peer) sweepSeenLocked(now time.Time) {
	for k, at := range p.seen {
		if now.Sub(at) > 2*maxClockSkew {
			delete(p.seen, k)
		}
	}
}

// sourceLimiter is a token bucket per source address, for at most max
// addresses: the least recently seen is forgotten first (so a flood from
// many addresses costs bounded memory, and the global rate still holds).
type sourceLimiter struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	max     int
	order   *list.List // of *sourceBucket, most recent first
	buckets map[netip.Addr]*list.Element
}

type sourceBucket struct {
	addr   netip.Addr
	tokens float64
	last   time.Time
}

func newSourceLimiter(r rate.Limit, burst, max int) *sourceLimiter {
	return &sourceLimiter{rate: float64(r), burst: float64(burst), max: max, order: list.New(), buckets: map[netip.Addr]*list.Element{}}
}

func (s *sourceLimiter) allow(addr netip.Addr, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b *sourceBucket
	if e, ok := s.buckets[addr]; ok {
		s.order.MoveToFront(e)
		b = e.Value.(*sourceBucket)
		b.tokens = min(s.burst, b.tokens+now.Sub(b.last).Seconds()*s.rate)
		b.last = now
	} else {
		if s.order.Len() >= s.max {
			old := s.order.Back()
			s.order.Remove(old)
			delete(s.buckets, old.Value.(*sourceBucket).addr)
		}
		b = &sourceBucket{addr: addr, tokens: s.burst, last: now}
		s.buckets[addr] = s.order.PushFront(b)
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (s *sourceLimiter) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.order.Len()
}
