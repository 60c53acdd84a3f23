package nat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
	"golang.org/x/time/rate"

	"github.com/uncloud-mesh/uncloud/tun"
)

// Device is the part of tun.Device the manager drives.
type Device interface {
	Peers() ([]tun.PeerStatus, error)
	SetEndpoint(key tun.Key, endpoint string) error
	// Rehandshake makes a peer that never had a session initiate one now
	// (see tun.Device.Rehandshake).
	Rehandshake(key tun.Key, endpoint string) (bool, error)
}

// Socket is the WireGuard socket's tap (tun.Bind).
type Socket interface {
	SendTo(data []byte, to netip.AddrPort) error
	SetControlHandler(h tun.ControlHandler)
	SetRelayHandler(h tun.RelayHandler)
}

// Config configures a Manager.
type Config struct {
	PrivateKey tun.Key
	ListenPort uint16
	Device     Device
	Socket     Socket
	// Filter leaves interface addresses out of the candidates; zero
	// means DefaultFilter.
	Filter Filter
	// Public are configured endpoints (a public address, a port forward),
	// published first.
	Public []netip.AddrPort
	// STUNServers are optional public STUN servers asked besides members.
	STUNServers []netip.AddrPort
	// RelayMbps bounds what one sender may push through this machine as a
	// relay, in megabits (10^6 bits) per second of relayed packets, relay
	// headers included; zero means DefaultRelayMbps. RelayBurst is how many
	// bytes it may send at once above that rate; zero means 1 MiB.
	RelayMbps  float64
	RelayBurst int
	// DisableRelay makes this machine refuse to relay for others.
	DisableRelay bool
	// Publish stores the candidates in the machine's record; it is called
	// only when they change, at most every PublishInterval.
	Publish func(ctx context.Context, candidates []netip.AddrPort) error
	// Interfaces lists the host's interfaces; nil means HostInterfaces.
	Interfaces func() ([]Interface, error)
	Logger     *slog.Logger
}

// Peer is another machine, from its record.
type Peer struct {
	Key        tun.Key
	Name       string
	Candidates []netip.AddrPort
	// PreferredRelay marks a machine to relay through first.
	PreferredRelay bool
}

// DefaultRelayMbps is a sender's relay budget when none is configured:
// above what the relay measured in the NAT zoo (106–127 Mbit/s), so it
// bounds a runaway sender without slowing a normal one.
const DefaultRelayMbps = 200

// relayBytesPerSecond converts a budget in Mbit/s to the bytes per second
// the token bucket counts.
func relayBytesPerSecond(mbps float64) float64 { return mbps * 1e6 / 8 }

// Timing of path selection. Probes are cheap (about 150 bytes each way),
// so a direct path is checked every two seconds: a NAT that forgot its
// mapping is noticed within seconds, not KubeSpan's minutes.
const (
	tickInterval          = 250 * time.Millisecond
	pollInterval          = time.Second
	probeRoundInterval    = 500 * time.Millisecond
	quickRoundsFor        = time.Second // a search's first second probes every tick
	probeTimeout          = 4 * time.Second
	callMeMaybeInterval   = time.Second
	directProbeInterval   = 2 * time.Second
	directDeadAfter       = 7 * time.Second
	reprobeInterval       = 10 * time.Second
	relayHandshakeTimeout = 30 * time.Second
	badRelayFor           = 30 * time.Second
	relayProvenFor        = time.Minute             // a relay that carried the peer's call-me-maybe this recently is proven
	relayWhileSearching   = 0                       // a new peer is relayed through a proven relay at once while the search goes on
	rehandshakeGap        = time.Second             // firstHandshake restarts a peer's handshake at most this often
	rehandshakeDelay      = 150 * time.Millisecond  // and only this long after WireGuard's own first initiation to the peer
	rehandshakeRepeats    = 2                       // a restart not followed by a session is repeated this often, rehandshakeGap apart
	wgRetryAfter          = 4500 * time.Millisecond // WireGuard's next initiation (REKEY_TIMEOUT, 5 s) may be in flight from here on
	pollSoonAfter         = 30 * time.Millisecond   // a new direct path's handshake is read this soon after
	pollAgainFor          = 2 * time.Second         // and again every pollSoonAfter until it is seen, for this long
	cmmAfterUnreachable   = 150 * time.Millisecond  // a call-me-maybe a relay could not deliver is sent again after this
	publishSoonAfter      = 500 * time.Millisecond  // a new reflexive mapping is published this soon after the last publish
	rotateInterval        = 15 * time.Second        // KubeSpan's per-candidate wait
	discoveryInterval     = 30 * time.Second
	publishInterval       = 10 * time.Second
	pendingTTL            = 10 * time.Second
	maxDiscoveryServers   = 4
	maxObservations       = 64 // distinct (server, mapping) answers kept
)

// Manager runs NAT traversal for one machine.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	self tun.Key // public
	id   keyID

	table       atomic.Pointer[peerTable] // read on the packet path
	relayStats  relayCounters
	stunStats   stunCounters
	serverLimit *rate.Limiter  // plain binding requests answered per second, all sources
	sources     *sourceLimiter // and per source address

	authQ       chan authMsg  // admitted messages between machines: served first
	plainQ      chan plainMsg // admitted discovery requests and answers
	unreachable chan unreachableNote
	peersIn     chan []Peer

	mu      sync.Mutex // guards everything below; held by the loop per event
	pending map[[stun.TransactionIDSize]byte]pendingTx
	obs     []Observation // one per server and mapping, the newest answer's time
	natType Type
	// classifiedAt: when natType was last computed from obs.
	classifiedAt time.Time
	published    []netip.AddrPort
	lastPub      time.Time
	// pubSoon: a new mapping was seen since the last publish. Peers
	// take call-me-maybe candidates only at addresses the record names,
	// so until the record has this machine's public address no peer
	// behind a NAT can probe it (a↔b in the NAT zoo waited for the
	// next publish, 10 s later).
	pubSoon bool
	// pollSoon: a new direct path was found, so WireGuard's handshake
	// on it is read at the next tick, not up to a second later. This
	// machine relays to a peer only once it has seen a fresh handshake,
	// and a newcomer's first relayed call-me-maybe waited for it.
	pollSoon bool
	// wake: the loop runs a tick then, before the next regular one,
	// when something is due sooner (a handshake restart, a publish, a
	// poll, a call-me-maybe resent): a join waits for events, not for
	// the 250 ms tick. Zero when nothing is.
	wake      time.Time
	nextDisc  time.Time
	lastDisc  time.Time
	discRound int
	lastSweep time.Time

	ifMu     sync.Mutex  // guards ifaces and ifacesAt (callers may or may not hold mu)
	ifaces   []Interface // the host's interfaces, as of ifacesAt
	ifacesAt time.Time
}

type unreachableNote struct{ relay, dst keyID }

type pendingTx struct {
	peer *peer // nil for discovery
	to   netip.AddrPort
	sent time.Time
}

// New checks the configuration and returns a manager; Run starts it.
func New(cfg Config) (*Manager, error) {
	if cfg.PrivateKey.IsZero() {
		return nil, errors.New("nat: private key is missing")
	}
	if cfg.Device == nil || cfg.Socket == nil {
		return nil, errors.New("nat: device and socket are required")
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = tun.DefaultListenPort
	}
	if cfg.Filter.ExcludePrefixes == nil && cfg.Filter.ExcludeInterfaces == nil {
		cfg.Filter = DefaultFilter()
	}
	if cfg.RelayMbps <= 0 {
		cfg.RelayMbps = DefaultRelayMbps
	}
	if cfg.RelayBurst <= 0 {
		cfg.RelayBurst = 1 << 20
	}
	if cfg.Interfaces == nil {
		cfg.Interfaces = HostInterfaces
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "nat"),
		self:        cfg.PrivateKey.PublicKey(),
		serverLimit: rate.NewLimiter(serverRate, serverBurst),
		sources:     newSourceLimiter(sourceRate, sourceBurst, sourceTableLen),
		authQ:       make(chan authMsg, authQueueLen),
		plainQ:      make(chan plainMsg, plainQueueLen),
		unreachable: make(chan unreachableNote, 16),
		peersIn:     make(chan []Peer, 1),
		pending:     map[[stun.TransactionIDSize]byte]pendingTx{},
		natType:     TypeUnknown,
	}
	m.id = idOf(m.self)
	m.table.Store(&peerTable{byID: map[keyID]*peer{}})
	return m, nil
}

// SetPeers replaces the peer set; the newest call wins. Path state of
// peers that stay is kept.
func (m *Manager) SetPeers(peers []Peer) {
	for {
		select {
		case m.peersIn <- peers:
			return
		default:
		}
		select {
		case <-m.peersIn: // drop the stale set
		default:
		}
	}
}

// Knows reports whether the manager already drives this peer's endpoint.
func (m *Manager) Knows(key tun.Key) bool {
	p := m.table.Load().byID[idOf(key)]
	return p != nil && p.key == key
}

// Run works until ctx ends. It installs the relay handler on the socket.
func (m *Manager) Run(ctx context.Context) error {
	m.cfg.Socket.SetRelayHandler(m)
	m.cfg.Socket.SetControlHandler(m)
	ticker := time.NewTicker(tickInterval)
	defer ticker.Stop()
	wakeTimer := time.NewTimer(time.Hour)
	defer wakeTimer.Stop()
	var armed time.Time // the instant wakeTimer is set for
	var lastPoll time.Time
	onTick := func(now time.Time) {
		m.mu.Lock()
		soon := m.pollSoon
		m.pollSoon = false
		m.mu.Unlock()
		if soon || now.Sub(lastPoll) >= pollInterval {
			if m.poll() {
				m.mu.Lock()
				m.pollSoon = true
				m.wakeBy(now.Add(pollSoonAfter))
				m.mu.Unlock()
			}
			lastPoll = now
		}
		m.mu.Lock()
		m.tick(ctx, now)
		m.mu.Unlock()
	}
	for {
		m.mu.Lock()
		w := m.wake
		m.mu.Unlock()
		if !w.IsZero() && !w.Equal(armed) {
			armed = w
			wakeTimer.Reset(max(time.Until(w), 0))
		}
		// Messages between machines first: path search never waits behind
		// discovery, however much of it strangers send.
		select {
		case a := <-m.authQ:
			m.mu.Lock()
			m.handleAuth(a)
			m.mu.Unlock()
			continue
		default:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case peers := <-m.peersIn:
			m.applyPeers(peers)
		case a := <-m.authQ:
			m.mu.Lock()
			m.handleAuth(a)
			m.mu.Unlock()
		case pm := <-m.plainQ:
			m.mu.Lock()
			m.handlePlain(pm)
			m.mu.Unlock()
		case n := <-m.unreachable:
			m.mu.Lock()
			m.onUnreachable(n)
			m.mu.Unlock()
		case now := <-ticker.C:
			onTick(now)
		case <-wakeTimer.C:
			armed = time.Time{}
			onTick(time.Now())
		}
	}
}

// applyPeers builds the new peer table, keeping path state.
func (m *Manager) applyPeers(peers []Peer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.table.Load()
	next := &peerTable{byID: map[keyID]*peer{}}
	var added []*peer
	for _, in := range peers {
		if in.Key == m.self || in.Key.IsZero() {
			continue
		}
		id := idOf(in.Key)
		p := old.byID[id]
		if p == nil || p.key != in.Key {
			keys, err := derivePairKeys(m.cfg.PrivateKey, in.Key)
			if err != nil {
				m.log.Warn("peer key unusable for NAT traversal", "peer", in.Name, "err", err)
				continue
			}
			p = newPeer(in, keys, relayBytesPerSecond(m.cfg.RelayMbps), m.cfg.RelayBurst)
			p.startProbing(time.Now())
			added = append(added, p)
		}
		p.name, p.preferred = in.Name, in.PreferredRelay
		cands := usableCandidates(in.Candidates, maxPeerCandidates)
		if !slices.Contains(added, p) && slices.ContainsFunc(cands, func(c netip.AddrPort) bool { return !slices.Contains(p.recordCands, c) }) &&
			!p.directHealthy(time.Now()) {
			// A new address in its record (a newcomer's public mapping,
			// published just after its first record): probed now, not at
			// the next round. Call-me-maybe candidates are taken only at
			// addresses the record names, so this is when a pair behind
			// NATs can first meet.
			p.startProbing(time.Now())
			p.nextRound = time.Now()
			added = append(added, p)
		}
		p.recordCands = cands
		next.byID[id] = p
	}
	next.index()
	m.table.Store(next)
	// A new peer's first probes and call-me-maybe go now, not at the
	// next tick (up to 250 ms later): during a join every member's
	// search for the newcomer, and the relays' direct paths to it that
	// its pairs behind NATs wait for, start that much sooner.
	now := time.Now()
	for _, p := range added {
		m.step(next, p, now)
	}
}

// poll reads what WireGuard sees of each peer: the endpoint in use, the
// last handshake. The relay path reads it without taking m.mu. It reports
// whether a peer with a new direct path has no handshake yet: this
// machine relays to a peer only once a poll has seen its handshake, and
// a newcomer's pairs behind NATs wait for that, so it is read again soon.
func (m *Manager) poll() (again bool) {
	statuses, err := m.cfg.Device.Peers()
	if err != nil {
		m.log.Debug("read peers", "err", err)
		return false
	}
	t := m.table.Load()
	now := time.Now()
	for _, st := range statuses {
		p := t.byID[idOf(st.PublicKey)]
		if p == nil || p.key != st.PublicKey {
			continue
		}
		// poll runs on the loop that changes paths, so reading p's path
		// here is race-free; the packet path reads the copy.
		li := &liveInfo{endpoint: st.Endpoint, handshake: st.LastHandshake, rx: st.RxBytes, direct: p.directHealthy(now)}
		if st.LastHandshake.IsZero() && li.direct && now.Sub(p.pathSince) < pollAgainFor {
			again = true
		}
		if old := p.liveInfo(); old.handshake.IsZero() && !st.LastHandshake.IsZero() {
			m.log.Debug("first handshake seen", "peer", p.name, "after", now.Sub(p.added).Round(time.Millisecond))
		}
		if st.Relay != nil {
			li.relayed, li.via = true, st.Relay.Relay
		}
		p.live.Store(li)
	}
	t.reindexAddrs()
	return again
}

// wakeBy makes the loop run a tick at t at the latest. Runs under m.mu.
func (m *Manager) wakeBy(t time.Time) {
	if m.wake.IsZero() || t.Before(m.wake) {
		m.wake = t
	}
}

func (m *Manager) tick(ctx context.Context, now time.Time) {
	// Everything still pending wakes the loop again below (step,
	// dueHandshake, the publish check): wakeBy keeps only the earliest.
	m.wake = time.Time{}
	if m.pollSoon {
		m.wakeBy(now.Add(pollSoonAfter))
	}
	for k, tx := range m.pending {
		if now.Sub(tx.sent) > pendingTTL {
			delete(m.pending, k)
		}
	}
	t := m.table.Load()
	for _, p := range t.byID {
		m.step(t, p, now)
	}
	if now.Sub(m.lastSweep) >= maxClockSkew {
		m.lastSweep = now
		for _, p := range t.byID {
			p.sweepSeen(now)
		}
	}
	if now.After(m.nextDisc) {
		m.discover(t, now)
	}
	if since := now.Sub(m.lastPub); since >= publishInterval || (m.pubSoon && since >= publishSoonAfter) {
		m.maybePublish(ctx, now)
	}
	if m.pubSoon {
		m.wakeBy(m.lastPub.Add(publishSoonAfter))
	}
}

func (m *Manager) setEndpoint(p *peer, ep string) error {
	if err := m.cfg.Device.SetEndpoint(p.key, ep); err != nil {
		return fmt.Errorf("peer %s: %w", p.name, err)
	}
	// What WireGuard uses now, until the next poll says otherwise.
	li := p.liveInfo()
	if r, err := tun.ParseRelayEndpoint(ep); err == nil {
		li.relayed, li.via, li.endpoint = true, r.Relay, netip.AddrPort{}
	} else if ap, err := netip.ParseAddrPort(ep); err == nil {
		li.relayed, li.via, li.endpoint = false, netip.AddrPort{}, ap
	}
	p.live.Store(&li)
	return nil
}
