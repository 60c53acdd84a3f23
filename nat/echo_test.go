package nat

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// TestEchoAccepted: a request's echo makes the direct path answered only
// when it names a stamp this machine sent to its direct endpoint, newer
// than the last one accepted, and came from that endpoint.
func TestEchoAccepted(t *testing.T) {
	direct := netip.MustParseAddrPort("198.18.1.2:51820")
	other := netip.MustParseAddrPort("198.18.1.9:51820")
	base := time.Unix(1_800_000_000, 0)
	sent := []int64{base.UnixNano(), base.Add(2 * time.Second).UnixNano()}
	for _, tc := range []struct {
		name     string
		from     netip.AddrPort
		path     Path
		echo     int64 // 0: none
		accepted int64 // already accepted before
		want     bool
	}{
		{"newest stamp sent", direct, PathDirect, sent[1], sent[0], true},
		{"older stamp sent, none accepted yet", direct, PathDirect, sent[0], 0, true},
		{"no echo", direct, PathDirect, 0, 0, false},
		{"stamp already accepted: proves nothing new", direct, PathDirect, sent[1], sent[1], false},
		{"older than the accepted one", direct, PathDirect, sent[0], sent[1], false},
		{"stamp never sent", direct, PathDirect, sent[1] + 1, 0, false},
		{"from another address", other, PathDirect, sent[1], 0, false},
		{"path not direct", direct, PathRelayed, sent[1], 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &peer{path: tc.path, direct: direct}
			p.echo.sent[0], p.echo.sent[1], p.echo.next = sent[0], sent[1], 2
			p.echo.accepted = tc.accepted
			now := base.Add(3 * time.Second)
			setters := []stun.Setter{stun.TransactionID, stun.BindingRequest, timeAttr(now)}
			if tc.echo != 0 {
				setters = append(setters, echoAttr(time.Unix(0, tc.echo)))
			}
			msg, err := stun.Build(setters...)
			if err != nil {
				t.Fatal(err)
			}
			got := p.onDirectMessage(msg, tc.from, now, true)
			if got != tc.want {
				t.Fatalf("accepted = %v, want %v", got, tc.want)
			}
			if tc.want && (!p.directOK.Equal(now) || !p.lastDirectTx.After(now)) {
				t.Errorf("accepted, but directOK %v and next own probe after %v", p.directOK, p.lastDirectTx)
			}
			if !tc.want && !p.directOK.IsZero() {
				t.Errorf("refused, but directOK moved to %v", p.directOK)
			}
			// A stamp heard on the direct path is what to echo next.
			if wantHeard := tc.from == direct && tc.path == PathDirect; (p.echo.heard == now.UnixNano()) != wantHeard {
				t.Errorf("heard stamp %d, want it recorded: %v", p.echo.heard, wantHeard)
			}
		})
	}
}

// probeCounter counts the authenticated binding requests each address
// sends on a fake network.
type probeCounter struct {
	mu sync.Mutex
	by map[netip.Addr]int
}

func (c *probeCounter) tap(from, _ netip.AddrPort, data []byte) {
	msg := &stun.Message{Raw: append([]byte(nil), data...)}
	if msg.Decode() != nil || msg.Type != stun.BindingRequest {
		return
	}
	var u stun.Username
	if u.GetFrom(msg) != nil || !strings.HasPrefix(u.String(), usernamePrefix) {
		return
	}
	c.mu.Lock()
	c.by[from.Addr()]++
	c.mu.Unlock()
}

func (c *probeCounter) reset() map[netip.Addr]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.by
	c.by = map[netip.Addr]int{}
	return out
}

// TestOneProbePerPair: once a pair is direct, one end's probes prove the
// path to both, so the pair sends about one probe per directProbeInterval
// (both ends used to send one each), and both ends keep counting it
// answered within an interval and a tick.
func TestOneProbePerPair(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n, a, b := directPair(t)
		settle(5 * time.Second) // past the search's last probes
		c := &probeCounter{by: map[netip.Addr]int{}}
		n.setTap(c.tap)
		const window = 60 * time.Second
		worst := map[string]time.Duration{}
		for end := time.Now().Add(window); time.Now().Before(end); {
			settle(100 * time.Millisecond)
			for _, e := range []struct {
				name     string
				from, to *node
			}{{"a", a, b}, {"b", b, a}} {
				at, ok := e.from.mgr.Answered()[e.to.priv.PublicKey()]
				if !ok {
					t.Fatalf("%s: %s is not direct any more", e.name, e.to.name)
				}
				worst[e.name] = max(worst[e.name], time.Since(at))
			}
		}
		got := c.reset()
		total := got[a.addr.Addr()] + got[b.addr.Addr()]
		t.Logf("probes in %v: a %d, b %d; longest without an answer: %v", window, got[a.addr.Addr()], got[b.addr.Addr()], worst)
		if perInterval := float64(total) / float64(window/directProbeInterval); perInterval > 1.2 {
			t.Errorf("%.2f probes per pair and interval, want about 1 (both ends probing: 2)", perInterval)
		}
		for name, w := range worst {
			if w > directProbeInterval+echoHoldBack+tickInterval+10*fakeLatency {
				t.Errorf("%s: %v without its direct path answered", name, w)
			}
		}
	})
}

// TestOneWayLossNoticedByBoth: when a direct path loses one direction,
// the end whose packets no longer arrive keeps receiving the other's
// probes, but their echo stops moving, so it probes for itself and gives
// the path up within directDeadAfter and an interval, as the other end
// does within directDeadAfter.
func TestOneWayLossNoticedByBoth(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n, a, b := directPair(t)
		settle(5 * time.Second)
		for _, dir := range []struct{ name, from, to string }{{"b→a", "b", "a"}, {"a→b", "a", "b"}} {
			func() {
				byName := map[string]*node{"a": a, "b": b}
				from, to := byName[dir.from], byName[dir.to]
				n.mu.Lock()
				n.block[[2]netip.Addr{from.addr.Addr(), to.addr.Addr()}] = true
				n.mu.Unlock()
				took := waitFor(t, directDeadAfter+directProbeInterval+time.Second, "both ends give up the direct path", func() bool {
					return a.pathTo(b).Path != PathDirect && b.pathTo(a).Path != PathDirect
				})
				t.Logf("%s cut: both gave up %v after it", dir.name, took)
				n.mu.Lock()
				n.block[[2]netip.Addr{from.addr.Addr(), to.addr.Addr()}] = false
				n.mu.Unlock()
				waitFor(t, 30*time.Second, "a and b direct again", func() bool {
					return a.pathTo(b).Path == PathDirect && b.pathTo(a).Path == PathDirect
				})
				settle(5 * time.Second)
			}()
		}
	})
}
