package nat

import (
	"bytes"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// floodB sends, every 5 ms until stop, a burst of plain binding requests
// from 64 source addresses and authenticated-looking messages that claim
// to come from a (wrongly keyed) at b's socket: more in one instant than
// any queue holds, arriving in the same instants as the probes (which
// leave on the managers' 250 ms ticks, on the same virtual clock).
func floodB(t *testing.T, n *fakeNet, b netip.AddrPort, claimFrom keyID, toID keyID, stop <-chan struct{}, wg *sync.WaitGroup) {
	var socks []*fakeSocket
	for i := range 64 {
		socks = append(socks, n.socket(netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 9, byte(i + 1)}), 40000)))
	}
	req, err := discoveryRequest()
	if err != nil {
		t.Fatal(err)
	}
	wrong := mustKey(t)
	wk, _ := derivePairKeys(wrong, wrong.PublicKey())
	forged, err := authenticated(wk.probe, claimFrom, toID, []stun.Setter{stun.TransactionID, stun.BindingRequest})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := range 600 {
				s := socks[i%len(socks)]
				if i%3 == 0 {
					s.SendTo(forged.Raw, b)
				} else {
					s.SendTo(req.Raw, b)
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// TestFloodDoesNotDelayPathSearch: while b's socket receives 120,000
// STUN messages a second from 64 addresses (plain binding requests and
// forgeries claiming to be a), a and b find their direct path as fast as
// without the flood. The flood is refused within the rates and counted.
func TestFloodDoesNotDelayPathSearch(t *testing.T) {
	search := func(t *testing.T, flood bool) (time.Duration, STUNStats) {
		var took time.Duration
		var st STUNStats
		inBubble(t, func(t *testing.T) {
			n := newFakeNet()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			defer wg.Wait()
			defer close(stop)
			// a and b are 198.18.1.1 and .2 (startNodes); the flood starts
			// first and runs through the whole search.
			nodes := startNodesDeferred(t, n, []string{"a", "b"})
			a, b := nodes[0], nodes[1]
			if flood {
				floodB(t, n, b.addr, idOf(a.priv.PublicKey()), idOf(b.priv.PublicKey()), stop, &wg)
				settle(50 * time.Millisecond)
			}
			runNodes(t, nodes)
			took = waitFor(t, 10*time.Second, "a and b direct", func() bool {
				return a.pathTo(b).Path == PathDirect && b.pathTo(a).Path == PathDirect
			})
			settle(time.Second) // a second of flood after the search, for the counters
			st = b.mgr.Status().STUN
		})
		return took, st
	}
	quiet, _ := search(t, false)
	flooded, st := search(t, true)
	t.Logf("direct path: %v without a flood, %v during it; b's STUN: %+v", quiet, flooded, st)
	if flooded > quiet+probeRoundInterval {
		t.Errorf("the flood delayed path search: %v, against %v without it", flooded, quiet)
	}
	if st.Limited == 0 || st.Rejected == 0 {
		t.Errorf("the flood was neither limited nor rejected: %+v", st)
	}
	// 64 sources × (10 at once + 5/s) over the ~1.3 s of flood, at most,
	// and never more than the server's global rate.
	if max := uint64(serverBurst + serverRate*3); st.Answered > max {
		t.Errorf("answered %d plain requests, above the server's rate (at most %d)", st.Answered, max)
	}
}

// TestCallMeMaybeFiltered: a member gone rogue (it holds a's key) asks b,
// in an authentic call-me-maybe, to probe loopback, the mesh, multicast,
// link-local, broadcast and a third party's address, and forty ports at
// a's own address. b probes none of the former, at most maxPeerCandidates
// of the latter, within its probe rate, and counts what it dropped.
func TestCallMeMaybeFiltered(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n, a, b := directPair(t)
		bad := []netip.AddrPort{
			netip.MustParseAddrPort("127.0.0.1:51820"),
			netip.MustParseAddrPort("[::1]:51820"),
			netip.MustParseAddrPort("0.0.0.0:51820"),
			netip.MustParseAddrPort("224.0.0.251:5353"),
			netip.MustParseAddrPort("169.254.10.1:51820"),
			netip.MustParseAddrPort("[fe80::1]:51820"),
			netip.MustParseAddrPort("255.255.255.255:51820"),
			netip.MustParseAddrPort("10.210.7.1:51820"),
			netip.MustParseAddrPort("203.0.113.9:53"),    // a third party
			netip.AddrPortFrom(addrOf(2), 22),            // b itself, another port
			netip.MustParseAddrPort("198.18.1.77:51820"), // a stranger in the same range
		}
		var cands []netip.AddrPort
		cands = append(cands, bad...)
		for port := range 40 {
			cands = append(cands, netip.AddrPortFrom(a.addr.Addr(), uint16(30000+port)))
		}
		var mu sync.Mutex
		sentTo := map[netip.AddrPort]int{}
		n.setTap(func(from, to netip.AddrPort, data []byte) {
			if from == b.addr {
				mu.Lock()
				sentTo[to]++
				mu.Unlock()
			}
		})
		ab, _ := derivePairKeys(a.priv, b.priv.PublicKey())
		cmm, err := authenticated(ab.probe, idOf(a.priv.PublicKey()), idOf(b.priv.PublicKey()),
			[]stun.Setter{stun.TransactionID, callMeMaybe}, candidatesAttr(cands), textAttr{attrNAT, string(TypeNone)})
		if err != nil {
			t.Fatal(err)
		}
		before := b.mgr.Status().STUN
		rogue := n.socket(netip.AddrPortFrom(addrOf(66), 40000))
		rogue.SendTo(cmm.Raw, b.addr)
		settle(3 * time.Second)
		after := b.mgr.Status().STUN
		mu.Lock()
		defer mu.Unlock()
		for _, c := range bad {
			if sentTo[c] > 0 {
				t.Errorf("b sent %d datagrams to %v", sentTo[c], c)
			}
		}
		var ports []netip.AddrPort
		total := 0
		for to, k := range sentTo {
			if to.Addr() == a.addr.Addr() && to != a.addr {
				ports = append(ports, to)
				total += k
			}
		}
		slices.SortFunc(ports, func(x, y netip.AddrPort) int { return x.Compare(y) })
		t.Logf("b probed %d ports at a's address (%d datagrams in 3 s); filtered %d", len(ports), total, after.Filtered-before.Filtered)
		if len(ports) == 0 || len(ports) > maxPeerCandidates {
			t.Errorf("b probed %d new ports at a's address, want 1..%d", len(ports), maxPeerCandidates)
		}
		if max := peerProbeBurst + 3*peerProbeRate; total > max {
			t.Errorf("b sent %d probes to a's address in 3 s, above its rate (%d)", total, max)
		}
		// Every unusable or foreign candidate read is counted; a list cut
		// at maxCandidatesAttr counts once for what was not read.
		if got := after.Filtered - before.Filtered; got < uint64(len(bad)) || got > uint64(len(cands)-len(ports)) {
			t.Errorf("filtered %d candidates, want %d to %d", got, len(bad), len(cands)-len(ports))
		}
		if p := a.pathTo(b); p.Path != PathDirect {
			t.Errorf("a → b is %s after the call-me-maybe", p.Path)
		}
	})
}

// TestSourceLimiter: each source has its own bucket; the table holds at
// most max sources, forgetting the least recently seen.
func TestSourceLimiter(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newSourceLimiter(5, 10, 100)
	one := netip.MustParseAddr("198.18.0.1")
	passed := 0
	for range 100 {
		if s.allow(one, now) {
			passed++
		}
	}
	if passed != 10 {
		t.Fatalf("one source, 100 at once: %d passed, want the burst of 10", passed)
	}
	if !s.allow(netip.MustParseAddr("198.18.0.2"), now) {
		t.Fatal("a second source was refused while the first flooded")
	}
	if !s.allow(one, now.Add(time.Second)) {
		t.Fatal("the first source was refused a second later")
	}
	for i := range 1000 {
		s.allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), now)
	}
	if got := s.len(); got != 100 {
		t.Fatalf("after 1000 sources the table holds %d, want 100", got)
	}
}

// TestAdmissionKeepsProbesApart: with the manager loop not draining at
// all (the worst case: it is busy), a flood of plain binding requests
// from 10,000 addresses, forgeries claiming a, and replays of one of a's
// probes fill only what they may; a's next genuine probe is still
// admitted, into the queue the loop serves first.
func TestAdmissionKeepsProbesApart(t *testing.T) {
	n := newFakeNet()
	nodes := makeNodes(t, n, []string{"a", "b"}, nil)
	a, b := nodes[0], nodes[1]
	b.mgr.applyPeers([]Peer{{Key: a.priv.PublicKey(), Name: "a", Candidates: []netip.AddrPort{a.addr}}})
	ab, _ := derivePairKeys(a.priv, b.priv.PublicKey())
	aID, bID := idOf(a.priv.PublicKey()), idOf(b.priv.PublicKey())
	probe := func() []byte {
		m, err := authenticated(ab.probe, aID, bID, []stun.Setter{stun.TransactionID, stun.BindingRequest})
		if err != nil {
			t.Fatal(err)
		}
		return m.Raw
	}
	req, _ := discoveryRequest()
	wrong := mustKey(t)
	wk, _ := derivePairKeys(wrong, b.priv.PublicKey())
	forged, _ := authenticated(wk.probe, aID, bID, []stun.Setter{stun.TransactionID, stun.BindingRequest})
	captured := probe()
	b.mgr.HandleControl(captured, a.addr)
	for i := range 10000 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(100 + i>>8), byte(i)}), 40000)
		b.mgr.HandleControl(req.Raw, src)
		b.mgr.HandleControl(forged.Raw, src)
		b.mgr.HandleControl(captured, src)
	}
	genuine := probe()
	b.mgr.HandleControl(genuine, a.addr)
	st := b.mgr.stunStats.snapshot()
	t.Logf("after 30,000 flood messages: plain queue %d/%d, auth queue %d/%d; %+v", len(b.mgr.plainQ), cap(b.mgr.plainQ), len(b.mgr.authQ), cap(b.mgr.authQ), st)
	if len(b.mgr.authQ) != 2 {
		t.Fatalf("auth queue holds %d messages, want a's two genuine probes", len(b.mgr.authQ))
	}
	first, second := <-b.mgr.authQ, <-b.mgr.authQ
	if !bytes.Equal(first.msg.Raw, captured) || !bytes.Equal(second.msg.Raw, genuine) {
		t.Fatal("the auth queue holds something other than a's genuine probes")
	}
	if len(b.mgr.plainQ) != cap(b.mgr.plainQ) || st.Rejected != 10000 || st.Duplicate != 10000 || st.Limited != 10000-uint64(cap(b.mgr.plainQ)) {
		t.Errorf("flood: plain queue %d (want full, %d), rejected %d, duplicate %d, limited %d (want 10000, 10000, %d)",
			len(b.mgr.plainQ), cap(b.mgr.plainQ), st.Rejected, st.Duplicate, st.Limited, 10000-cap(b.mgr.plainQ))
	}
	if got := b.mgr.sources.len(); got > sourceTableLen {
		t.Errorf("source table holds %d addresses, above its bound %d", got, sourceTableLen)
	}
}
