package nat

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

// The managers under test talk through fakeNet, an in-memory UDP network
// that routes datagrams between fake sockets the way tun.Bind would hand
// them over: STUN to the control handler (or, on a socket without one, a queue), relay packets through the
// receiving manager's Open, WireGuard datagrams to a delivered queue. It is
// a fake because a unit test cannot make real NATs; the e2e tests run the
// same code on real sockets behind real nftables NATs.
//
// Everything in it is channels, mutexes and timers, so the tests that run
// managers over it run inside a testing/synctest bubble (see inBubble):
// the managers' tickers and timeouts run on the bubble's virtual clock,
// and a test that waits thirty protocol seconds takes milliseconds.
type fakeNet struct {
	mu    sync.Mutex
	socks map[netip.AddrPort]*fakeSocket
	block map[[2]netip.Addr]bool
	// latency is the one-way delay of every datagram. It is not zero so
	// that a probe's round trip takes time even on a virtual clock, where
	// nothing else makes time pass between a send and its answer.
	latency time.Duration
	// tap, when set, sees every datagram sent (before blocking applies).
	tap func(from, to netip.AddrPort, data []byte)
	// nats puts hosts (by their own address) behind a NAT.
	nats map[netip.Addr]*fakeNAT
}

// fakeNAT is a NAT in front of one host: a new public port for each
// destination (symmetric: fully random ports, as the lab's nftables NAT)
// or one per source port (endpoint-independent), and only replies let
// in (from the address a mapping was made for).
type fakeNAT struct {
	public    netip.Addr
	symmetric bool
	next      uint16
	out       map[[2]netip.AddrPort]netip.AddrPort // (inner, remote) → public mapping
	in        map[netip.AddrPort]natEntry          // public mapping → inner, and who may answer
}

type natEntry struct {
	inner   netip.AddrPort
	remotes map[netip.AddrPort]bool
}

// setNAT puts host behind a NAT whose outside address is public.
func (n *fakeNet) setNAT(host, public netip.Addr, symmetric bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nats == nil {
		n.nats = map[netip.Addr]*fakeNAT{}
	}
	n.nats[host] = &fakeNAT{public: public, symmetric: symmetric, next: 20000,
		out: map[[2]netip.AddrPort]netip.AddrPort{}, in: map[netip.AddrPort]natEntry{}}
}

// translate applies the NATs to one datagram: the source a sender behind
// a NAT shows, and the inner address a datagram to a mapping goes to. It
// reports false when a NAT drops it. Called under n.mu.
func (n *fakeNet) translate(from, to netip.AddrPort) (netip.AddrPort, netip.AddrPort, bool) {
	if _, private := n.nats[to.Addr()]; private {
		return from, to, false // an inner address is not routable from outside
	}
	if nt := n.nats[from.Addr()]; nt != nil {
		key := [2]netip.AddrPort{from, {}}
		if nt.symmetric {
			key[1] = to
		}
		mapped, ok := nt.out[key]
		if !ok {
			mapped = netip.AddrPortFrom(nt.public, nt.next)
			nt.next++
			nt.out[key] = mapped
			nt.in[mapped] = natEntry{inner: from, remotes: map[netip.AddrPort]bool{}}
		}
		nt.in[mapped].remotes[to] = true
		from = mapped
	}
	for _, nt := range n.nats {
		if nt.public != to.Addr() {
			continue
		}
		e, ok := nt.in[to]
		if !ok || !e.remotes[from] {
			return from, to, false
		}
		to = e.inner
	}
	return from, to, true
}

// fakeLatency is fakeNet's one-way delay: a LAN's.
const fakeLatency = time.Millisecond

func newFakeNet() *fakeNet {
	return &fakeNet{socks: map[netip.AddrPort]*fakeSocket{}, block: map[[2]netip.Addr]bool{}, latency: fakeLatency}
}

func (n *fakeNet) setBlocked(a, b netip.Addr, blocked bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.block[[2]netip.Addr{a, b}] = blocked
	n.block[[2]netip.Addr{b, a}] = blocked
}

type delivered struct {
	payload []byte
	from    *tun.RelayEndpoint
}

type fakeSocket struct {
	net       *fakeNet
	addr      netip.AddrPort
	ctl       chan tun.Datagram
	delivered chan delivered
	mu        sync.Mutex
	relay     tun.RelayHandler
	control   tun.ControlHandler
}

func (n *fakeNet) socket(addr netip.AddrPort) *fakeSocket {
	s := &fakeSocket{net: n, addr: addr, ctl: make(chan tun.Datagram, 256), delivered: make(chan delivered, 256)}
	n.mu.Lock()
	n.socks[addr] = s
	n.mu.Unlock()
	return s
}

func (s *fakeSocket) SetControlHandler(h tun.ControlHandler) {
	s.mu.Lock()
	s.control = h
	s.mu.Unlock()
}
func (s *fakeSocket) SetRelayHandler(h tun.RelayHandler) {
	s.mu.Lock()
	s.relay = h
	s.mu.Unlock()
}

func (s *fakeSocket) SendTo(data []byte, to netip.AddrPort) error {
	s.net.route(s.addr, to, data)
	return nil
}

// route sends a copy of data from one fake socket to another, after the
// network's latency. Whether the path is blocked is decided at sending.
func (n *fakeNet) route(from, to netip.AddrPort, data []byte) {
	n.mu.Lock()
	blocked := n.block[[2]netip.Addr{from.Addr(), to.Addr()}]
	from, to, passed := n.translate(from, to)
	blocked = blocked || !passed
	dst := n.socks[to]
	latency := n.latency
	tap := n.tap
	n.mu.Unlock()
	if tap != nil {
		tap(from, to, data)
	}
	if dst == nil || blocked {
		return
	}
	pkt := append([]byte(nil), data...)
	time.AfterFunc(latency, func() { dst.receive(from, pkt) })
}

// receive hands a datagram to the socket the way tun.Bind would.
func (s *fakeSocket) receive(from netip.AddrPort, pkt []byte) {
	switch tun.ClassifyPacket(pkt) {
	case tun.KindSTUN:
		s.mu.Lock()
		h := s.control
		s.mu.Unlock()
		if h != nil {
			h.HandleControl(pkt, from)
			return
		}
		select {
		case s.ctl <- tun.Datagram{Kind: tun.KindSTUN, From: from, Data: pkt}:
		default:
		}
	case tun.KindRelay:
		s.mu.Lock()
		h := s.relay
		s.mu.Unlock()
		if h == nil {
			return
		}
		payload, ep, ok := h.Open(pkt, from)
		if ok {
			re, _ := ep.(*tun.RelayEndpoint)
			s.delivered <- delivered{payload: append([]byte(nil), payload...), from: re}
		}
	}
}

// fakeDevice records the endpoints the manager sets; every peer counts as
// recently handshaken, so a relay forwards to it.
type fakeDevice struct {
	mu           sync.Mutex
	peers        map[tun.Key]*tun.PeerStatus
	noHandshake  bool // a dead path: WireGuard never completes a handshake
	rehandshakes int  // Rehandshake calls
	restartedAt  []time.Time
}

func (d *fakeDevice) Peers() ([]tun.PeerStatus, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []tun.PeerStatus
	for _, p := range d.peers {
		cp := *p
		if !d.noHandshake {
			cp.LastHandshake = time.Now()
			cp.RxBytes = uint64(time.Now().UnixNano()) // always something new
		}
		out = append(out, cp)
	}
	return out, nil
}

func (d *fakeDevice) SetEndpoint(key tun.Key, ep string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.peers[key]
	if p == nil {
		p = &tun.PeerStatus{}
		p.PublicKey = key
		d.peers[key] = p
	}
	if tun.IsRelayEndpoint(ep) {
		r, err := tun.ParseRelayEndpoint(ep)
		if err != nil {
			return err
		}
		p.Relay, p.Endpoint = r, netip.AddrPort{}
		return nil
	}
	ap, err := netip.ParseAddrPort(ep)
	if err != nil {
		return err
	}
	p.Relay, p.Endpoint = nil, ap
	return nil
}

func (d *fakeDevice) Rehandshake(key tun.Key, ep string) (bool, error) {
	d.mu.Lock()
	d.rehandshakes++
	d.restartedAt = append(d.restartedAt, time.Now())
	d.mu.Unlock()
	return true, d.SetEndpoint(key, ep)
}

func (d *fakeDevice) endpoint(key tun.Key) (netip.AddrPort, *tun.RelayEndpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.peers[key]; p != nil {
		return p.Endpoint, p.Relay
	}
	return netip.AddrPort{}, nil
}

type node struct {
	name string
	priv tun.Key
	addr netip.AddrPort
	sock *fakeSocket
	dev  *fakeDevice
	mgr  *Manager
}

// startNodes makes one manager per address, all peers of each other,
// each knowing the others' addresses as candidates, and runs them.
func startNodes(t *testing.T, n *fakeNet, names []string, tweak func(*Config)) []*node {
	t.Helper()
	nodes := makeNodes(t, n, names, tweak)
	runNodes(t, nodes)
	return nodes
}

// sendRelayed seals the WireGuard datagram wg from a to b through a's
// relay to b, sends it and returns what b is handed (failing the test if
// nothing comes within 5 s).
func sendRelayed(t *testing.T, a, b *node, wg []byte) delivered {
	t.Helper()
	_, ep := a.dev.endpoint(b.priv.PublicKey())
	sealed, err := a.mgr.Seal(nil, wg, ep)
	if err != nil {
		t.Fatal(err)
	}
	a.sock.SendTo(sealed, ep.Relay)
	select {
	case d := <-b.sock.delivered:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("the relayed datagram never reached b")
		return delivered{}
	}
}

// directPair starts machines a and b on a fake network of their own and
// waits until each has a direct path to the other.
func directPair(t *testing.T) (*fakeNet, *node, *node) {
	t.Helper()
	n := newFakeNet()
	nodes := startNodes(t, n, []string{"a", "b"}, nil)
	a, b := nodes[0], nodes[1]
	waitFor(t, 10*time.Second, "a and b direct", func() bool {
		return a.pathTo(b).Path == PathDirect && b.pathTo(a).Path == PathDirect
	})
	return n, a, b
}

// startNodesDeferred makes the nodes of startNodes without running them.
func startNodesDeferred(t *testing.T, n *fakeNet, names []string) []*node {
	t.Helper()
	return makeNodes(t, n, names, nil)
}

func makeNodes(t *testing.T, n *fakeNet, names []string, tweak func(*Config)) []*node {
	t.Helper()
	var nodes []*node
	for i, name := range names {
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(i + 1)}), 51820)
		nd := &node{name: name, priv: mustKey(t), addr: addr, sock: n.socket(addr), dev: &fakeDevice{peers: map[tun.Key]*tun.PeerStatus{}}}
		cfg := Config{
			PrivateKey: nd.priv, Device: nd.dev, Socket: nd.sock,
			Interfaces: func() ([]Interface, error) {
				return []Interface{{Name: "eth0", Up: true, Addrs: []netip.Addr{addr.Addr()}}}, nil
			},
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: testLogLevel()})).With("node", name),
		}
		if tweak != nil {
			tweak(&cfg)
		}
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		nd.mgr = m
		nodes = append(nodes, nd)
	}
	return nodes
}

// runNodes runs the nodes' managers until the test ends.
func runNodes(t *testing.T, nodes []*node) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, nd := range nodes {
		var peers []Peer
		for _, o := range nodes {
			if o != nd {
				peers = append(peers, Peer{Key: o.priv.PublicKey(), Name: o.name, Candidates: []netip.AddrPort{o.addr}})
				nd.dev.peers[o.priv.PublicKey()] = &tun.PeerStatus{Peer: tun.Peer{PublicKey: o.priv.PublicKey()}}
			}
		}
		nd.mgr.SetPeers(peers)
		wg.Go(func() { _ = nd.mgr.Run(ctx) })
	}
}

func (nd *node) pathTo(o *node) PeerStatus {
	for _, p := range nd.mgr.Status().Peers {
		if p.Key == o.priv.PublicKey() {
			return p
		}
	}
	return PeerStatus{}
}

// inBubble runs a test's body inside a synctest bubble: its managers,
// fake network and timers all run on the bubble's virtual clock, which
// advances only when every goroutine in the bubble is blocked. So a
// timeout in the body bounds protocol time, not the machine's speed, and
// the test neither waits for real seconds nor flakes on a loaded machine.
// Everything the body starts (startNodes' managers, fakeNet's deliveries)
// must be created inside it.
func inBubble(t *testing.T, body func(t *testing.T)) {
	t.Helper()
	synctest.Test(t, body)
}

// waitStep is how far virtual time moves between two checks of a
// condition in waitFor: well under the managers' tick, so a wait ends
// within a tick of the condition holding.
const waitStep = 50 * time.Millisecond

// waitFor, inside a bubble, lets virtual time pass until cond holds,
// checking it whenever every goroutine of the bubble is blocked (so the
// managers are between events, never halfway through one). It fails the
// test if cond does not hold within the given protocol time, and returns
// the virtual time it took.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		synctest.Wait()
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) >= within {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(waitStep)
	}
}

// settle lets d of virtual time pass and returns once every goroutine of
// the bubble is blocked again: everything due within d has happened.
func settle(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// setTap installs fn as the network's tap.
func (n *fakeNet) setTap(fn func(from, to netip.AddrPort, data []byte)) {
	n.mu.Lock()
	n.tap = fn
	n.mu.Unlock()
}

// drain empties a socket's delivered queue until the test ends, so that a
// test that makes a relay deliver much never blocks the fake network.
func drain(t *testing.T, s *fakeSocket) {
	ctx := t.Context()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.delivered:
			}
		}
	}()
}

func addrOf(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}) }

// testLogLevel is the managers' log level in tests: debug with
// UNCLOUD_NAT_TEST_DEBUG set, to read a failing test's timeline.
func testLogLevel() slog.Level {
	if os.Getenv("UNCLOUD_NAT_TEST_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}
