package nat

import (
	"bytes"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

// relayedTrio starts a, b and r with a↔b blocked and waits until both
// reach each other through r, with r able to forward to both.
func relayedTrio(t *testing.T, n *fakeNet, tweak func(*Config)) (a, b, r *node) {
	t.Helper()
	n.setBlocked(addrOf(1), addrOf(2), true)
	nodes := startNodes(t, n, []string{"a", "b", "r"}, tweak)
	a, b, r = nodes[0], nodes[1], nodes[2]
	waitFor(t, 20*time.Second, "a→b and b→a relayed via r", func() bool {
		_, ra := a.dev.endpoint(b.priv.PublicKey())
		_, rb := b.dev.endpoint(a.priv.PublicKey())
		return ra != nil && ra.Relay == r.addr && rb != nil && rb.Relay == r.addr && canRelayTo(r, a) && canRelayTo(r, b)
	})
	return a, b, r
}

// TestRelayReplayDropped: a relayed datagram captured on either hop and
// sent again, at once from another address or later from the original
// one, is dropped and counted, by the relay and by the receiver; the
// original goes through once.
func TestRelayReplayDropped(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		a, b, r := relayedTrio(t, n, nil)
		var mu sync.Mutex
		var toRelay, toB []byte // the first hop's packet, the second's
		n.setTap(func(from, to netip.AddrPort, data []byte) {
			mu.Lock()
			defer mu.Unlock()
			if len(data) > relayHeaderLen && data[0] == tun.RelayMarker && bytes.HasSuffix(data, []byte("captured")) {
				switch {
				case from == a.addr && to == r.addr:
					toRelay = append([]byte(nil), data...)
				case from == r.addr && to == b.addr:
					toB = append([]byte(nil), data...)
				}
			}
		})
		wg := append([]byte{4, 0, 0, 0}, []byte("a transport message, captured")...)
		if d := sendRelayed(t, a, b, wg); !bytes.Equal(d.payload, wg) {
			t.Fatalf("b got %q, want %q", d.payload, wg)
		}
		mu.Lock()
		first, second := toRelay, toB
		mu.Unlock()
		if first == nil || second == nil {
			t.Fatalf("nothing captured: to the relay %d bytes, to b %d bytes", len(first), len(second))
		}
		stranger := n.socket(netip.AddrPortFrom(addrOf(66), 40000))
		rBefore, bBefore := r.mgr.Status().Relay, b.mgr.Status().Relay

		// At once, from a stranger's address: both hops' copies.
		stranger.SendTo(first, r.addr)
		stranger.SendTo(second, b.addr)
		settle(time.Second)
		rNow, bNow := r.mgr.Status().Relay, b.mgr.Status().Relay
		if rNow.Replayed-rBefore.Replayed != 1 || bNow.Replayed-bBefore.Replayed != 1 {
			t.Errorf("replayed at once: r counted %d, b %d; want 1 each", rNow.Replayed-rBefore.Replayed, bNow.Replayed-bBefore.Replayed)
		}
		// Later, from the original addresses: stale, whatever the windows
		// hold (as after a restart of the receiver, which forgets them).
		settle(maxRelaySkew + 2*time.Second)
		r.mgr.table.Load().byID[idOf(a.priv.PublicKey())].recvWindow = replayWindow{}
		a.sock.SendTo(first, r.addr)
		r.sock.SendTo(second, b.addr)
		settle(time.Second)
		rLate, bLate := r.mgr.Status().Relay, b.mgr.Status().Relay
		if rLate.Stale-rNow.Stale != 1 || bLate.Stale-bNow.Stale != 1 {
			t.Errorf("replayed %v later: r counted %d stale, b %d; want 1 each", maxRelaySkew+2*time.Second, rLate.Stale-rNow.Stale, bLate.Stale-bNow.Stale)
		}
		// b delivers relayed WireGuard datagrams only; none came since the
		// original.
		select {
		case d := <-b.sock.delivered:
			t.Fatalf("b delivered %q after the original", d.payload)
		default:
		}
	})
}

// TestRelayBudgetMbps: a sender pushing twice its budget through a relay
// gets its budget, in megabits per second, and no more.
func TestRelayBudgetMbps(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		const mbps, burst = 8, 40_000 // 1,000,000 bytes per second, a burst of 40 ms
		a, b, r := relayedTrio(t, n, func(c *Config) { c.RelayMbps, c.RelayBurst = mbps, burst })
		drain(t, b.sock)
		_, ep := a.dev.endpoint(b.priv.PublicKey())
		payload := append([]byte{4, 0, 0, 0}, make([]byte, 1206)...) // 1250 bytes sealed
		before := r.mgr.Status().Relay
		// Offer 2 MB/s for two seconds: 16 packets every 10 ms.
		const seconds = 2
		offered := 0
		for range seconds * 100 {
			for range 16 {
				sealed, err := a.mgr.Seal(nil, payload, ep)
				if err != nil {
					t.Fatal(err)
				}
				r.mgr.Open(sealed, a.addr)
				offered += len(sealed)
			}
			time.Sleep(10 * time.Millisecond)
		}
		after := r.mgr.Status().Relay
		passed := (after.Forwarded - before.Forwarded) * uint64(len(payload)+relayHeaderLen)
		want := float64(burst) + seconds*relayBytesPerSecond(mbps)
		t.Logf("offered %d bytes in %d s, %d passed (budget %d Mbit/s: %.0f with the burst), %d packets refused",
			offered, seconds, passed, mbps, want, after.RateLimited-before.RateLimited)
		if float64(passed) > want*1.02 || float64(passed) < want*0.95 {
			t.Errorf("passed %d bytes, want %.0f ±5%%: the budget is %d Mbit/s", passed, want, mbps)
		}
	})
}
