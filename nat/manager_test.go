package nat

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/uncloud-mesh/uncloud/tun"
)

// TestDirectPathByProbes: two machines that reach each other settle on
// each other's address through answered probes, on both sides.
func TestDirectPathByProbes(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		nodes := startNodes(t, n, []string{"a", "b"}, nil)
		a, b := nodes[0], nodes[1]
		took := waitFor(t, 10*time.Second, "a and b direct", func() bool {
			ea, _ := a.dev.endpoint(b.priv.PublicKey())
			eb, _ := b.dev.endpoint(a.priv.PublicKey())
			return ea == b.addr && eb == a.addr && a.pathTo(b).Path == PathDirect && b.pathTo(a).Path == PathDirect
		})
		t.Logf("direct after %v", took)
		if rtt := a.pathTo(b).RTT; rtt <= 0 {
			t.Errorf("no RTT measured: %v", rtt)
		}
	})
}

// TestRelayAndBackToDirect: with a↔b blocked, both go through r, a
// sealed WireGuard datagram crosses r and arrives at b as coming from
// "a via r"; once unblocked, both return to direct.
func TestRelayAndBackToDirect(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		var nodes []*node
		// Block before the managers start, so the first search fails.
		n.setBlocked(addrOf(1), addrOf(2), true)
		nodes = startNodes(t, n, []string{"a", "b", "r"}, nil)
		a, b, r := nodes[0], nodes[1], nodes[2]
		waitFor(t, 20*time.Second, "a→b and b→a relayed via r", func() bool {
			_, ra := a.dev.endpoint(b.priv.PublicKey())
			_, rb := b.dev.endpoint(a.priv.PublicKey())
			return ra != nil && ra.Relay == r.addr && rb != nil && rb.Relay == r.addr
		})
		if via := a.pathTo(b).Via; via != "r" {
			t.Errorf("a → b via %q, want r", via)
		}

		// A WireGuard datagram (any type-4 message) from a to b through r.
		wg := append([]byte{4, 0, 0, 0}, bytes.Repeat([]byte{0xAB}, 120)...)
		d := sendRelayed(t, a, b, wg)
		if !bytes.Equal(d.payload, wg) {
			t.Fatalf("b got %x, want %x", d.payload, wg)
		}
		if d.from == nil || d.from.Peer != a.priv.PublicKey() || d.from.Relay != r.addr {
			t.Fatalf("b got it from %v, want a via r", d.from)
		}
		if st := r.mgr.Status().Relay; st.Forwarded == 0 {
			t.Errorf("r counted no forwarded datagram: %+v", st)
		}

		n.setBlocked(addrOf(1), addrOf(2), false)
		took := waitFor(t, 30*time.Second, "a and b back to direct", func() bool {
			ea, _ := a.dev.endpoint(b.priv.PublicKey())
			eb, _ := b.dev.endpoint(a.priv.PublicKey())
			return ea == b.addr && eb == a.addr
		})
		t.Logf("direct again %v after the block was lifted", took)
	})
}

// TestRelayAuthAndLimits: a relay drops garbage, truncated and forged
// relay packets (and counts them), forwards nothing for a sender it does
// not know, and enforces the per-sender budget.
func TestRelayAuthAndLimits(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		nodes := startNodes(t, n, []string{"a", "b", "r"}, func(c *Config) { c.RelayMbps, c.RelayBurst = 0.008, 3000 }) // 1000 bytes/s
		a, b, r := nodes[0], nodes[1], nodes[2]
		waitFor(t, 10*time.Second, "r direct to a and b", func() bool {
			return r.pathTo(a).Path == PathDirect && r.pathTo(b).Path == PathDirect
		})
		// r forwards once its poll has seen a's and b's endpoints.
		waitFor(t, 5*time.Second, "r's relay table has direct endpoints for a and b", func() bool {
			return canRelayTo(r, a) && canRelayTo(r, b)
		})
		ar, _ := derivePairKeys(a.priv, r.priv.PublicKey())
		outsider := mustKey(t)
		or, _ := derivePairKeys(outsider, r.priv.PublicKey())
		aID, bID, oID := idOf(a.priv.PublicKey()), idOf(b.priv.PublicKey()), idOf(outsider.PublicKey())
		payload := append([]byte{4, 0, 0, 0}, make([]byte, 996)...)
		// a's own counter towards r, so these packets and a's never collide.
		aToR := &a.mgr.table.Load().byID[idOf(r.priv.PublicKey())].sendSeq
		fresh := func() uint64 { return aToR.next(time.Now()) }
		good := sealRelay(nil, relayHeader{typ: relayForward, src: aID, dst: bID, hop: aID, seq: fresh()}, &ar.relay, payload)
		forgedMAC := append([]byte(nil), good...)
		forgedMAC[relayMACOff] ^= 0xFF
		tamperedPayload := append([]byte(nil), good...)
		tamperedPayload[len(tamperedPayload)-1] ^= 1
		outsiders := sealRelay(nil, relayHeader{typ: relayForward, src: oID, dst: bID, hop: oID, seq: fresh()}, &or.relay, payload)

		before := r.mgr.Status().Relay
		for _, bad := range [][]byte{
			{tun.RelayMarker},                               // truncated
			good[:relayHeaderLen-1],                         // truncated header
			append([]byte{tun.RelayMarker, 9}, good[2:]...), // unknown type
			forgedMAC, tamperedPayload, outsiders,
		} {
			if _, _, ok := r.mgr.Open(bad, a.addr); ok {
				t.Fatalf("relay delivered a bad packet %x…", bad[:min(8, len(bad))])
			}
		}
		after := r.mgr.Status().Relay
		if after.Dropped-before.Dropped != 6 || after.Forwarded != before.Forwarded {
			t.Fatalf("after 6 bad packets: %+v (before %+v)", after, before)
		}
		// Anything r sent on would reach b one latency later: give it a
		// (virtual) second before looking. r's budget is full either way.
		settle(time.Second)
		select {
		case d := <-b.sock.delivered:
			t.Fatalf("b received %x from a bad packet", d.payload[:8])
		default:
		}

		// Budget: 3000 bytes of burst, then 1000 B/s: of ten 1044-byte
		// packets sent at once, two pass and the rest are refused.
		for range 10 {
			r.mgr.Open(sealRelay(nil, relayHeader{typ: relayForward, src: aID, dst: bID, hop: aID, seq: fresh()}, &ar.relay, payload), a.addr)
		}
		st := r.mgr.Status().Relay
		if st.Forwarded-after.Forwarded != 2 || st.RateLimited-after.RateLimited != 8 {
			t.Fatalf("budget: forwarded %d, rate-limited %d; want 2 and 8", st.Forwarded-after.Forwarded, st.RateLimited-after.RateLimited)
		}
	})
}

// TestProbeReplayRejected: a captured probe delivered again is refused
// and not answered; so is one for another machine or keyed wrongly.
func TestProbeReplayRejected(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n, a, b := directPair(t)
		ab, _ := derivePairKeys(a.priv, b.priv.PublicKey())
		aID, bID := idOf(a.priv.PublicKey()), idOf(b.priv.PublicKey())
		probe, err := authenticated(ab.probe, aID, bID, []stun.Setter{stun.TransactionID, stun.BindingRequest})
		if err != nil {
			t.Fatal(err)
		}
		wrongKey := mustKey(t)
		wk, _ := derivePairKeys(wrongKey, b.priv.PublicKey())
		forged, _ := authenticated(wk.probe, aID, bID, []stun.Setter{stun.TransactionID, stun.BindingRequest})
		notForB, _ := authenticated(ab.probe, aID, aID, []stun.Setter{stun.TransactionID, stun.BindingRequest})

		// Send from an address that is nobody's, and watch what b answers.
		spy := n.socket(netip.AddrPortFrom(addrOf(99), 40000))
		before := b.mgr.Status().STUN
		for _, raw := range [][]byte{probe.Raw, probe.Raw, forged.Raw, notForB.Raw, []byte("\x00\x01\x00\x28\x21\x12\xa4\x42garbagegarbage")} {
			spy.SendTo(raw, b.addr)
		}
		// Watch for two seconds (virtual: b answers within two latencies,
		// so anything not here by then is not coming).
		settle(2 * time.Second)
		answers := 0
	drain:
		for {
			select {
			case d := <-spy.ctl:
				m := &stun.Message{Raw: d.Data}
				if m.Decode() == nil && m.Type == stun.BindingSuccess {
					answers++
				}
			default:
				break drain
			}
		}
		st := b.mgr.Status().STUN
		if answers != 1 {
			t.Errorf("b answered %d of the probes, want 1 (the first copy only)", answers)
		}
		if st.Rejected-before.Rejected != 2 || st.Duplicate-before.Duplicate != 1 || st.Garbage-before.Garbage != 1 {
			t.Errorf("rejected %d (want 2: forged, not for b), duplicate %d (want 1: the replay), garbage %d (want 1)",
				st.Rejected-before.Rejected, st.Duplicate-before.Duplicate, st.Garbage-before.Garbage)
		}
	})
}

// TestSTUNFlood: thousands of binding requests, truncated messages and
// relay-marked garbage at one machine are answered within the server's
// rate or dropped, all counted, and its path to its peer stays direct.
func TestSTUNFlood(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n, a, b := directPair(t)
		flooder := n.socket(netip.AddrPortFrom(addrOf(66), 50000))
		req, err := discoveryRequest()
		if err != nil {
			t.Fatal(err)
		}
		before := b.mgr.Status()
		start := time.Now()
		const each = 2000
		for i := range each {
			flooder.SendTo(req.Raw, b.addr)                                           // valid discovery
			flooder.SendTo(req.Raw[:20+i%len(req.Raw[20:])], b.addr)                  // truncated
			b.mgr.Open([]byte{tun.RelayMarker, byte(i), 0, 0, 1, 2, 3}, flooder.addr) // relay garbage
		}
		elapsed := time.Since(start)
		// The flood is delivered one latency later; a second of virtual
		// time is far more than the manager needs to drain its queue, and
		// settle returns only once it has (it is blocked again).
		settle(time.Second)
		after := b.mgr.Status()
		answered := after.STUN.Answered - before.STUN.Answered
		// The fake socket's queue (256) drops the rest, as the Bind's does.
		// elapsed and the server's rate limiter read the same clock, the
		// bubble's, so the bound is the rate itself, however loaded the
		// machine: the flood takes no virtual time, and the second of
		// draining lets 200 more answers through at most.
		if max := uint64(100 + 200*(elapsed+time.Second).Seconds()); answered > max {
			t.Errorf("answered %d binding requests in %v, above the server rate (max %d)", answered, elapsed, max)
		}
		if after.Relay.Dropped-before.Relay.Dropped != each {
			t.Errorf("relay garbage dropped %d, want %d", after.Relay.Dropped-before.Relay.Dropped, each)
		}
		if after.STUN.Garbage == before.STUN.Garbage && after.STUN.Limited == before.STUN.Limited {
			t.Errorf("nothing counted as garbage or limited: %+v", after.STUN)
		}
		// An observation window, on the virtual clock: over more than one
		// probe interval after the flood, the path stays direct.
		settle(3 * time.Second)
		if p := a.pathTo(b); p.Path != PathDirect {
			t.Errorf("after the flood a → b is %s", p.Path)
		}
		t.Logf("flood of %d: answered %d, garbage %d, limited %d, relay dropped %d", 3*each, answered,
			after.STUN.Garbage-before.STUN.Garbage, after.STUN.Limited-before.STUN.Limited, after.Relay.Dropped-before.Relay.Dropped)
	})
}

// TestPreferredRelay: with two relays that reach both ends, the one
// marked preferred carries the pair.
func TestPreferredRelay(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		n.setBlocked(addrOf(1), addrOf(2), true)
		nodes := startNodes(t, n, []string{"a", "b", "r1", "r2"}, nil)
		a, b, r2 := nodes[0], nodes[1], nodes[3]
		for _, nd := range []*node{a, b} {
			var peers []Peer
			for _, o := range nodes {
				if o != nd {
					peers = append(peers, Peer{Key: o.priv.PublicKey(), Name: o.name, Candidates: []netip.AddrPort{o.addr}, PreferredRelay: o == r2})
				}
			}
			nd.mgr.SetPeers(peers)
		}
		waitFor(t, 30*time.Second, "a↔b relayed via the preferred r2", func() bool {
			_, ra := a.dev.endpoint(b.priv.PublicKey())
			_, rb := b.dev.endpoint(a.priv.PublicKey())
			return ra != nil && ra.Relay == r2.addr && rb != nil && rb.Relay == r2.addr
		})
	})
}

// TestRotationWithoutRelay: when no probe is answered and no machine can
// relay, the peer's endpoint rotates through its candidates, one per
// rotateInterval, as KubeSpan does.
func TestRotationWithoutRelay(t *testing.T) {
	dev := &fakeDevice{peers: map[tun.Key]*tun.PeerStatus{}, noHandshake: true}
	n := newFakeNet()
	m, err := New(Config{PrivateKey: mustKey(t), Device: dev, Socket: n.socket(netip.AddrPortFrom(addrOf(1), 51820)),
		Interfaces: func() ([]Interface, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	peerKey := mustKey(t).PublicKey()
	cands := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:51820"), netip.MustParseAddrPort("192.0.2.2:51820"), netip.MustParseAddrPort("192.0.2.3:51820")}
	dev.peers[peerKey] = &tun.PeerStatus{Peer: tun.Peer{PublicKey: peerKey}}
	m.applyPeers([]Peer{{Key: peerKey, Name: "x", Candidates: cands}})
	tab := m.table.Load()
	p := tab.byID[idOf(peerKey)]
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fallback(tab, p, now)
	if p.path != PathRotating {
		t.Fatalf("path %s, want rotating", p.path)
	}
	var seen []netip.AddrPort
	for i := 1; i <= 4; i++ {
		m.step(tab, p, now.Add(time.Duration(i)*(rotateInterval+time.Second)))
		ep, _ := dev.endpoint(peerKey)
		seen = append(seen, ep)
	}
	if seen[0] == seen[1] || seen[1] == seen[2] || seen[0] == seen[2] || seen[3] != seen[0] {
		t.Fatalf("endpoints over four rotations: %v, want each candidate once, then the first again", seen)
	}
}

// canRelayTo reports whether r would forward to dst now: r's own path
// search has dst direct and its last poll of its device saw a fresh
// direct endpoint for dst (what Manager.forward checks before it
// forwards).
func canRelayTo(r, dst *node) bool {
	p := r.mgr.table.Load().byID[idOf(dst.priv.PublicKey())]
	if p == nil {
		return false
	}
	li := p.liveInfo()
	return li.direct && !li.relayed && li.endpoint == dst.addr && time.Since(li.handshake) < relayFreshHandshake
}
