package e2e

import (
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// TestRemovePeerOnSIGHUP runs three kernel-mode machines, removes one peer
// from the first machine's config and sends SIGHUP: traffic between the
// first and the removed machine stops in both directions, while the other
// peer keeps working, including a TCP conversation that was open across the
// reload. Putting the peer back restores it.
func TestRemovePeerOnSIGHUP(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	nodes := startMesh(t, l, kernel, kernel, kernel)
	a, b, c := nodes[0], nodes[1], nodes[2]
	for _, pair := range [][2]node{{a, b}, {a, c}, {c, a}} {
		if msg, ok := reach(ctx, pair[0], pair[1], 20*time.Second); !ok {
			t.Fatalf("before removal, %s → %s: %s", pair[0].host.Name, pair[1].host.Name, msg)
		}
	}
	hold, err := a.host.StartHold(ctx, "hold", b.meshAddr(echoPort), 100*time.Millisecond, a.dial(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := hold.WaitRounds(ctx, 3); err != nil {
		t.Fatal(err)
	}

	full := a.agent.Config
	if err := a.agent.Reload(ctx, full.WithoutPeer(c.agent.PublicKey())); err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]node{{a, c}, {c, a}} {
		if msg, ok := unreachable(ctx, pair[0], pair[1], 2*time.Second); !ok {
			t.Errorf("after removing %s from %s, %s → %s still works: %s",
				c.host.Name, a.host.Name, pair[0].host.Name, pair[1].host.Name, msg)
		}
	}
	if msg, ok := reach(ctx, a, b, 5*time.Second); !ok {
		t.Errorf("after removing %s, the other peer %s is unreachable: %s", c.host.Name, b.host.Name, msg)
	}
	if err := hold.WaitRounds(ctx, 5); err != nil {
		t.Errorf("TCP conversation %s → %s across the reload: %v", a.host.Name, b.host.Name, err)
	}
	if !a.agent.Proc.Alive() {
		t.Fatalf("agent on %s exited after SIGHUP", a.host.Name)
	}

	// Adding the peer back brings it back.
	if err := a.agent.Reload(ctx, full); err != nil {
		t.Fatal(err)
	}
	if msg, ok := reach(ctx, a, c, 20*time.Second); !ok {
		t.Errorf("after adding %s back, %s → %s: %s", c.host.Name, a.host.Name, c.host.Name, msg)
	}
	if ok, failure := hold.Rounds(); failure != "" {
		t.Errorf("TCP conversation broke after %d rounds: %s", ok, failure)
	}
}
