package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// TestGarbageUDPFlood points bounded floods of garbage (random bytes,
// truncated and full-size WireGuard-looking messages, STUN-looking ones;
// see the lab's garbage function) from a stranger on the internet at the
// WireGuard ports of a kernel-mode and a netstack agent at once, in two
// rounds. Afterwards both agents are alive, logged no panic, and the mesh
// still carries traffic; a TCP conversation running through the floods
// must not break; and the second round must not grow memory much (the
// first warms buffer pools; growth that goes on means garbage piles up,
// e.g. in the queue that takes non-WireGuard packets off the socket).
func TestGarbageUDPFlood(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	nodes := startMesh(t, l, kernel, netstack)
	a, b := nodes[0], nodes[1]
	stranger := l.MustHost(t, "x", lab.HostOptions{})
	if msg, ok := reach(ctx, a, b, 20*time.Second); !ok {
		t.Fatalf("before the flood: %s", msg)
	}
	hold, err := a.host.StartHold(ctx, "hold", b.meshAddr(echoPort), 100*time.Millisecond, a.dial(0))
	if err != nil {
		t.Fatal(err)
	}

	// Each round: at most 100k datagrams or 5 s per target.
	const packets, duration = 100000, 5 * time.Second
	rss := make([][3]int64, len(nodes)) // before, after round 1, after round 2
	for i, n := range nodes {
		if rss[i][0], err = n.agent.Proc.RSS(); err != nil {
			t.Fatal(err)
		}
	}
	for round := 1; round <= 2; round++ {
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Go(func() {
				fctx, cancel := context.WithTimeout(ctx, duration+30*time.Second)
				defer cancel()
				res, err := stranger.FloodUDP(fctx, n.agent.Endpoint(), packets, duration, uint64(10*round+i))
				if err != nil {
					t.Errorf("flood %s: %v", n.host.Name, err)
					return
				}
				t.Logf("round %d: flooded %s (%s) at %v: %d datagrams in %.1f s (%d send errors)",
					round, n.host.Name, n.mode, n.agent.Endpoint(), res.Sent, res.Seconds, res.Errors)
				if res.Sent == 0 {
					t.Errorf("flood %s sent nothing: %+v", n.host.Name, res)
				}
			})
		}
		wg.Wait()
		for i, n := range nodes {
			if !n.agent.Proc.Alive() {
				t.Fatalf("agent on %s (%s) died during flood round %d: %v", n.host.Name, n.mode, round, n.agent.Proc.Wait(ctx))
			}
			if rss[i][round], err = n.agent.Proc.RSS(); err != nil {
				t.Fatal(err)
			}
		}
	}

	for i, n := range nodes {
		if log := n.agent.Proc.Log(); strings.Contains(log, "panic:") || strings.Contains(log, "fatal error:") {
			t.Errorf("agent on %s (%s) logged a panic", n.host.Name, n.mode)
		}
		t.Logf("%s (%s) memory: %d MiB before, %d MiB after round 1, %d MiB after round 2",
			n.host.Name, n.mode, rss[i][0]>>20, rss[i][1]>>20, rss[i][2]>>20)
		if growth := rss[i][2] - rss[i][1]; growth > 32<<20 {
			t.Errorf("%s (%s) grew by %d MiB more in the second flood round", n.host.Name, n.mode, growth>>20)
		}
	}
	if ok, failure := hold.Rounds(); failure != "" {
		t.Errorf("TCP conversation %s → %s broke during the flood after %d rounds: %s", a.host.Name, b.host.Name, ok, failure)
	}
	for _, pair := range [][2]node{{a, b}, {b, a}} {
		if msg, ok := reach(ctx, pair[0], pair[1], 10*time.Second); !ok {
			t.Errorf("after the flood, %s → %s: %s", pair[0].host.Name, pair[1].host.Name, msg)
		}
	}
	transfer(t, a, b, 10<<20, 11)
	transfer(t, b, a, 10<<20, 12)
}
