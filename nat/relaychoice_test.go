package nat

import (
	"bytes"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

// TestRelayChoice: a relay is used only if it reaches both ends directly.
// a and b cannot reach each other; r1 reaches a but not b (it reaches b
// only through r2), r2 reaches both. r1 is first by name and equal on
// round-trip time, so only the proof decides: a must settle on r2, never
// pass a datagram through r1, and r1 must relay nothing to b.
func TestRelayChoice(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		n.setBlocked(addrOf(1), addrOf(2), true) // a ↮ b
		n.setBlocked(addrOf(3), addrOf(2), true) // r1 ↮ b
		// What r1 relays to b (it may relay to a: during the formation
		// r2 reaches r1 before a, and its call-me-maybe to a goes
		// through r1, which does reach a).
		var r1ToB atomic.Int32
		n.setTap(func(from, to netip.AddrPort, data []byte) {
			if from.Addr() == addrOf(3) && to.Addr() == addrOf(2) && len(data) > 1 && data[0] == tun.RelayMarker && data[1] == relayDeliver {
				r1ToB.Add(1)
			}
		})
		nodes := startNodes(t, n, []string{"a", "b", "r1", "r2"}, nil)
		a, b, r1, r2 := nodes[0], nodes[1], nodes[2], nodes[3]
		viaR1 := false
		waitFor(t, 20*time.Second, "a↔b relayed via r2", func() bool {
			_, ra := a.dev.endpoint(b.priv.PublicKey())
			_, rb := b.dev.endpoint(a.priv.PublicKey())
			if ra != nil && ra.Relay == r1.addr {
				viaR1 = true
			}
			return ra != nil && ra.Relay == r2.addr && rb != nil && rb.Relay == r2.addr
		})
		if viaR1 {
			t.Error("a chose r1, which does not reach b directly, before settling on r2")
		}
		if canRelayTo(r1, b) {
			t.Error("r1 would forward to b, which it reaches only through a relay")
		}
		settle(10 * time.Second)
		if _, ra := a.dev.endpoint(b.priv.PublicKey()); ra == nil || ra.Relay != r2.addr {
			t.Errorf("a → b moved off r2: %+v", ra)
		}
		if got := r1ToB.Load(); got != 0 {
			t.Errorf("r1 relayed %d datagrams to b, which it does not reach directly", got)
		}
		if via := a.pathTo(b).Via; via != "r2" {
			t.Errorf("a → b shows via %q, want r2", via)
		}
	})
}

// TestRelayBackRechecksAtOnce: a machine with no relay rotates its
// endpoints; when a relay becomes reachable again the pair moves onto it
// at once, not at the next rotation 15 s later.
func TestRelayBackRechecksAtOnce(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		n.setBlocked(addrOf(1), addrOf(2), true) // a ↮ b
		n.setBlocked(addrOf(1), addrOf(3), true) // a ↮ r: no relay for a
		nodes := startNodes(t, n, []string{"a", "b", "r"}, nil)
		a, b, r := nodes[0], nodes[1], nodes[2]
		waitFor(t, 30*time.Second, "a rotating for b", func() bool { return a.pathTo(b).Path == PathRotating })
		settle(time.Second) // the rotation has just been (re)scheduled: 15 s to go
		n.setBlocked(addrOf(1), addrOf(3), false)
		waitFor(t, 30*time.Second, "a → r direct again", func() bool { return a.pathTo(r).Path == PathDirect })
		took := waitFor(t, 5*time.Second, "a → b relayed via r once r is back", func() bool {
			_, ra := a.dev.endpoint(b.priv.PublicKey())
			return ra != nil && ra.Relay == r.addr
		})
		if took > time.Second {
			t.Errorf("a took %v to take the relay that came back, want within a tick or two", took)
		}
	})
}

// TestRelayRefusesWithoutDirectPath: a relay whose WireGuard endpoint for
// the destination is still an address with a fresh handshake (rotating,
// or a stale direct endpoint) but whose own path search has lost the
// destination does not forward to it: it answers "unreachable", so the
// sender moves on instead of losing datagrams through it.
func TestRelayRefusesWithoutDirectPath(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		a, b, r := relayedTrio(t, n, nil)
		// r's search has just lost b (or not found it yet, as during a
		// formation) while WireGuard still holds b's address with a
		// fresh handshake.
		rb := r.mgr.table.Load().byID[idOf(b.priv.PublicKey())]
		r.mgr.mu.Lock()
		rb.path, rb.directOK = PathProbing, time.Time{}
		rb.live.Store(&liveInfo{endpoint: b.addr, handshake: time.Now()})
		r.mgr.mu.Unlock()
		before := r.mgr.Status().Relay
		wg := append([]byte{4, 0, 0, 0}, make([]byte, 64)...)
		sealed, err := a.mgr.Seal(nil, wg, &tun.RelayEndpoint{Relay: r.addr, Peer: b.priv.PublicKey()})
		if err != nil {
			t.Fatal(err)
		}
		a.sock.SendTo(sealed, r.addr)
		settle(100 * time.Millisecond)
		after := r.mgr.Status().Relay
		if after.Forwarded != before.Forwarded {
			t.Errorf("r forwarded to b, which it no longer reaches directly (forwarded %d → %d)", before.Forwarded, after.Forwarded)
		}
		if after.NoRoute == before.NoRoute {
			t.Errorf("r did not count the refusal: %+v", after)
		}
	})
}

// TestFirstHandshakeByKeyOrder: when a pair finds its direct path and
// WireGuard has no session yet, exactly one side, the one with the lower
// key, restarts the handshake at once (both would cross).
func TestFirstHandshakeByKeyOrder(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		nodes := makeNodes(t, n, []string{"a", "b"}, nil)
		for _, nd := range nodes {
			nd.dev.noHandshake = true
		}
		runNodes(t, nodes)
		a, b := nodes[0], nodes[1]
		waitFor(t, 10*time.Second, "a↔b direct", func() bool {
			return a.pathTo(b).Path == PathDirect && b.pathTo(a).Path == PathDirect
		})
		settle(rehandshakeDelay + tickInterval) // the restart waits a little
		lower, higher := a, b
		ka, kb := a.priv.PublicKey(), b.priv.PublicKey()
		if bytes.Compare(kb[:], ka[:]) < 0 {
			lower, higher = b, a
		}
		lower.dev.mu.Lock()
		l := lower.dev.rehandshakes
		lower.dev.mu.Unlock()
		higher.dev.mu.Lock()
		h := higher.dev.rehandshakes
		higher.dev.mu.Unlock()
		if l != 1 || h != 0 {
			t.Errorf("handshakes restarted: %d by the lower key, %d by the higher, want 1 and 0", l, h)
		}
	})
}

// TestRelayedWhileSearching: two machines behind symmetric NATs never
// find a direct path; they are relayed about a second after they meet,
// through a relay proven by the other's call-me-maybe, not at the end of
// the 4 s search.
func TestRelayedWhileSearching(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		nodes := makeNodes(t, n, []string{"a", "b", "r"}, nil)
		a, b, r := nodes[0], nodes[1], nodes[2]
		n.setNAT(a.addr.Addr(), netip.MustParseAddr("203.0.113.1"), true)
		n.setNAT(b.addr.Addr(), netip.MustParseAddr("203.0.113.2"), true)
		start := time.Now()
		runNodes(t, nodes)
		waitFor(t, 10*time.Second, "a↔b relayed via r", func() bool {
			_, ra := a.dev.endpoint(b.priv.PublicKey())
			_, rb := b.dev.endpoint(a.priv.PublicKey())
			return ra != nil && ra.Relay == r.addr && rb != nil && rb.Relay == r.addr
		})
		if took := time.Since(start); took > 2*time.Second || took >= probeTimeout {
			t.Errorf("relayed after %v, want about relayWhileSearching (%v)", took, relayWhileSearching)
		}
	})
}
