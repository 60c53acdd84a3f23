package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// TestGarbageUDPFlood points a bounded flood of garbage (random bytes,
// truncated and full-size WireGuard-looking messages) from a stranger on
// the internet at the WireGuard port of a kernel-mode and a netstack agent
// at once. Afterwards both are alive, did not log a panic, and the mesh
// still carries traffic; a TCP conversation that runs through the flood
// must not break.
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

	const packets, duration = 200000, 5 * time.Second
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			fctx, cancel := context.WithTimeout(ctx, duration+30*time.Second)
			defer cancel()
			res, err := stranger.FloodUDP(fctx, n.agent.Endpoint(), packets, duration, uint64(i+1))
			if err != nil {
				t.Errorf("flood %s: %v", n.host.Name, err)
				return
			}
			t.Logf("flooded %s (%s) at %v: %d datagrams in %.1f s (%d send errors)",
				n.host.Name, n.mode, n.agent.Endpoint(), res.Sent, res.Seconds, res.Errors)
			if res.Sent == 0 {
				t.Errorf("flood %s sent nothing: %+v", n.host.Name, res)
			}
		})
	}
	wg.Wait()

	for _, n := range nodes {
		if !n.agent.Proc.Alive() {
			t.Errorf("agent on %s (%s) died during the flood: %v", n.host.Name, n.mode, n.agent.Proc.Wait(ctx))
		}
		if log := n.agent.Proc.Log(); strings.Contains(log, "panic:") || strings.Contains(log, "fatal error:") {
			t.Errorf("agent on %s (%s) logged a panic", n.host.Name, n.mode)
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
