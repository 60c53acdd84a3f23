package nat

import (
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/uncloud-mesh/uncloud/tun"
)

// Path is how a peer is reached.
type Path string

const (
	PathProbing  Path = "probing"  // looking for a path, nothing chosen yet
	PathDirect   Path = "direct"   // a probed direct endpoint
	PathRelayed  Path = "relayed"  // through another member
	PathRotating Path = "rotating" // KubeSpan-style: one candidate after another
)

// peer is one remote machine's traversal state. Fields above mu are set
// once; live is written by poll and read by the relay path; the rest is
// owned by the manager loop (under Manager.mu).
type peer struct {
	key     tun.Key
	id      keyID
	keys    pairKeys
	limiter *rate.Limiter // relay budget of this machine as a sender
	notify  *rate.Limiter // unreachable notes sent to it
	live    atomic.Pointer[liveInfo]

	sendSeq    seqCounter   // relay hops this machine seals for it
	recvWindow replayWindow // relay hops it sealed for this machine

	ctlBudget  *rate.Limiter // its authenticated STUN messages admitted per second
	probeLimit *rate.Limiter // probes this machine sends it, to all its candidates
	seenMu     sync.Mutex
	seen       map[seenKey]time.Time // its authenticated messages within the clock window

	epMu      sync.Mutex
	endpoints map[netip.AddrPort]*tun.RelayEndpoint // "this peer via relay X"

	added       time.Time // when the manager learnt of it (WireGuard's first initiation to it goes then)
	heardCMM    bool      // a call-me-maybe of its came in since then
	name        string
	preferred   bool
	recordCands []netip.AddrPort
	remoteCands []netip.AddrPort // from its call-me-maybe
	seenFrom    []netip.AddrPort // addresses its probes came from
	remoteNAT   Type

	path         Path
	direct       netip.AddrPort // chosen direct endpoint
	directOK     time.Time      // last answered probe on it
	lastDirectTx time.Time      // the last probe sent to it; later than now while the peer probes for both (echo.go)
	echo         echoState
	rtt          time.Duration
	pathSince    time.Time

	probing    bool
	probeStart time.Time
	nextRound  time.Time
	nextCMM    time.Time
	lastCMM    time.Time // last call-me-maybe sent
	// lastCMMRelays: how many relays carried it. None (a newcomer
	// reaches no one directly yet) means the peer did not hear of it,
	// so it is sent again as soon as a relay comes up.
	lastCMMRelays int
	nextReprobe   time.Time
	searchStart   time.Time // when the current search for a path began
	// failedSearches counts searches without a direct answer since the
	// last direct path; the next search waits 2, 4, 8, then 10 s.
	failedSearches uint

	relay     keyID
	relayAt   time.Time
	relayRx   uint64 // bytes received from the peer when the relay was chosen
	badRelays map[keyID]time.Time
	// relayOK: when the peer's call-me-maybe last arrived through each
	// relay. A relay forwards only to machines it reaches directly, and
	// this machine sends only to relays it reaches directly, so such a
	// relay is proven to reach both ends directly.
	relayOK    map[keyID]time.Time
	rotateIdx  int
	nextRotate time.Time
	// rehandshakeAt: when firstHandshake last restarted WireGuard's
	// handshake with the peer.
	rehandshakeAt time.Time
	// rehandshakeDue: firstHandshake asked for a restart then, through
	// rehandshakeEP.
	rehandshakeDue time.Time
	rehandshakeEP  string
	rehandshakes   int           // restarts repeated because no session followed
	firstDirect    time.Duration // time from first probe to first direct path
	firstRelay     time.Duration
}

type liveInfo struct {
	endpoint  netip.AddrPort
	relayed   bool
	via       netip.AddrPort
	handshake time.Time
	rx        uint64
	// direct: this machine's own path search has a healthy direct path
	// to the peer (probes answered lately), not merely a WireGuard
	// endpoint that is an address. Only then does it relay to the peer.
	direct bool
}

func newPeer(in Peer, keys pairKeys, relayRate float64, relayBurst int) *peer {
	now := time.Now()
	return &peer{
		key:         in.Key,
		id:          idOf(in.Key),
		keys:        keys,
		limiter:     rate.NewLimiter(rate.Limit(relayRate), relayBurst),
		notify:      rate.NewLimiter(2, 2),
		ctlBudget:   rate.NewLimiter(peerControlRate, peerControlBurst),
		probeLimit:  rate.NewLimiter(peerProbeRate, peerProbeBurst),
		seen:        map[seenKey]time.Time{},
		endpoints:   map[netip.AddrPort]*tun.RelayEndpoint{},
		path:        PathProbing,
		added:       now,
		pathSince:   now,
		searchStart: now,
		badRelays:   map[keyID]time.Time{},
		relayOK:     map[keyID]time.Time{},
		remoteNAT:   TypeUnknown,
	}
}

// liveInfo is nil-safe: an unknown peer has no path.
// markDirect updates the packet path's copy of p's direct health at once,
// between two polls: a relay must neither refuse a machine it has just
// reached nor forward to one it has just lost.
func (p *peer) markDirect(ok bool) {
	li := p.liveInfo()
	li.direct = ok
	p.live.Store(&li)
}

func (p *peer) liveInfo() liveInfo {
	if p == nil {
		return liveInfo{}
	}
	if li := p.live.Load(); li != nil {
		return *li
	}
	return liveInfo{}
}

// relayEndpoint returns the cached virtual endpoint "p via relay", so the
// receive path does not allocate one per datagram.
func (p *peer) relayEndpoint(relay netip.AddrPort) *tun.RelayEndpoint {
	p.epMu.Lock()
	defer p.epMu.Unlock()
	ep := p.endpoints[relay]
	if ep == nil {
		if len(p.endpoints) > 16 {
			clear(p.endpoints)
		}
		ep = &tun.RelayEndpoint{Relay: relay, Peer: p.key}
		p.endpoints[relay] = ep
	}
	return ep
}

// allCandidates is every address worth probing: the record's, those in
// its last call-me-maybe, where its probes came from, and the endpoint
// WireGuard itself saw (KubeSpan's harvested endpoint).
func (p *peer) allCandidates() []netip.AddrPort {
	var out []netip.AddrPort
	add := func(list ...netip.AddrPort) {
		for _, ap := range list {
			if usableCandidate(ap) && !slices.Contains(out, ap) {
				out = append(out, ap)
			}
		}
	}
	add(p.recordCands...)
	add(p.remoteCands...)
	add(p.seenFrom...)
	if li := p.liveInfo(); !li.relayed {
		add(li.endpoint)
	}
	return out
}

func (p *peer) startProbing(now time.Time) {
	if p.probing {
		return
	}
	p.probing = true
	p.probeStart = now
	p.nextRound = now
	p.nextCMM = now
}

func (p *peer) directHealthy(now time.Time) bool {
	return p.path == PathDirect && now.Sub(p.directOK) < directDeadAfter
}

// peerTable is an immutable view of the peers for the packet path.
type peerTable struct {
	byID   map[keyID]*peer
	addrs  atomic.Pointer[map[netip.AddrPort]*peer] // current direct endpoints
	sorted []*peer
}

func (t *peerTable) index() {
	t.sorted = t.sorted[:0]
	for _, p := range t.byID {
		t.sorted = append(t.sorted, p)
	}
	sort.Slice(t.sorted, func(i, j int) bool { return t.sorted[i].name < t.sorted[j].name })
	t.reindexAddrs()
}

func (t *peerTable) reindexAddrs() {
	m := make(map[netip.AddrPort]*peer, len(t.byID))
	for _, p := range t.byID {
		if li := p.liveInfo(); !li.relayed && li.endpoint.IsValid() {
			m[li.endpoint] = p
		}
	}
	t.addrs.Store(&m)
}

// byAddr finds the peer whose WireGuard endpoint is ap.
func (t *peerTable) byAddr(ap netip.AddrPort) *peer {
	if m := t.addrs.Load(); m != nil {
		return (*m)[ap]
	}
	return nil
}
