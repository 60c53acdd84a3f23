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

	epMu      sync.Mutex
	endpoints map[netip.AddrPort]*tun.RelayEndpoint // "this peer via relay X"

	name        string
	preferred   bool
	recordCands []netip.AddrPort
	remoteCands []netip.AddrPort // from its call-me-maybe
	seenFrom    []netip.AddrPort // addresses its probes came from
	remoteNAT   Type

	path         Path
	direct       netip.AddrPort // chosen direct endpoint
	directOK     time.Time      // last proof it works: an answered probe, or WireGuard receiving from it
	lastDirectTx time.Time      // last probe sent on it
	unanswered   time.Time      // first probe on it still without an answer (zero: none)
	rxSeen       uint64         // WireGuard's byte counters as of the last step
	txSeen       uint64
	txAt         time.Time // when txSeen last grew
	rtt          time.Duration
	pathSince    time.Time

	probing     bool
	probeStart  time.Time
	nextRound   time.Time
	nextCMM     time.Time
	lastCMM     time.Time // last call-me-maybe sent
	nextReprobe time.Time
	searchStart time.Time // when the current search for a path began
	// failedSearches counts searches without a direct answer since the
	// last direct path; the next search waits 2, 4, 8, then 10 s.
	failedSearches uint

	relay       keyID
	relayAt     time.Time
	relayRx     uint64 // bytes received from the peer when the relay was chosen
	badRelays   map[keyID]time.Time
	rotateIdx   int
	nextRotate  time.Time
	firstDirect time.Duration // time from first probe to first direct path
	firstRelay  time.Duration
}

type liveInfo struct {
	endpoint  netip.AddrPort
	relayed   bool
	via       netip.AddrPort
	handshake time.Time
	rx, tx    uint64
}

func newPeer(in Peer, keys pairKeys, relayRate float64, relayBurst int) *peer {
	now := time.Now()
	return &peer{
		key:         in.Key,
		id:          idOf(in.Key),
		keys:        keys,
		limiter:     rate.NewLimiter(rate.Limit(relayRate), relayBurst),
		notify:      rate.NewLimiter(2, 2),
		endpoints:   map[netip.AddrPort]*tun.RelayEndpoint{},
		path:        PathProbing,
		pathSince:   now,
		searchStart: now,
		badRelays:   map[keyID]time.Time{},
		remoteNAT:   TypeUnknown,
	}
}

// liveInfo is nil-safe: an unknown peer has no path.
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
			if ap.IsValid() && ap.Port() != 0 && !slices.Contains(out, ap) {
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

// directHealthy: the direct path is chosen and no probe on it has gone
// unanswered for long. An idle path is healthy until a probe says
// otherwise; see directProbeDue.
func (p *peer) directHealthy(now time.Time) bool {
	return p.path == PathDirect && (p.unanswered.IsZero() || now.Sub(p.unanswered) < directDeadAfter-directProbeInterval)
}

// missedProbe: a probe on the direct path is outstanding for longer than
// any round trip, so an answer from another address may take over.
func (p *peer) missedProbe(now time.Time) bool {
	return !p.unanswered.IsZero() && now.Sub(p.unanswered) >= time.Second
}

// noteTraffic reads WireGuard's counters (as of the last poll): bytes
// received from the direct endpoint prove the path as well as an answered
// probe does, and bytes sent are what makes a silent path worth checking.
func (p *peer) noteTraffic(now time.Time) {
	li := p.liveInfo()
	if li.rx != p.rxSeen {
		p.rxSeen = li.rx
		if !li.relayed && li.endpoint == p.direct {
			p.directOK, p.unanswered = now, time.Time{}
		}
	}
	if li.tx != p.txSeen {
		p.txSeen, p.txAt = li.tx, now
	}
}

// directProbeDue decides whether to probe the direct path now. Probes are
// how a dead path is noticed, but with twenty peers a probe to each every
// two seconds was most of an idle agent's CPU. So: none while WireGuard
// keeps receiving from the endpoint; every directProbeInterval while this
// machine sends into silence, or while a probe is unanswered (a dead path
// is noticed within directDeadAfter of the first unanswered probe, as
// before); and only every idleProbeInterval on a path that carries
// nothing either way (WireGuard's keepalive every 25 s usually answers
// for it). This is how Tailscale treats idle peers, too.
func (p *peer) directProbeDue(now time.Time) bool {
	switch {
	case now.Sub(p.lastDirectTx) < directProbeInterval:
		return false
	case !p.unanswered.IsZero():
		return true
	case now.Sub(p.directOK) < directProbeInterval:
		return false
	case p.txAt.After(p.directOK):
		return true
	default:
		return now.Sub(p.directOK) >= idleProbeInterval
	}
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
