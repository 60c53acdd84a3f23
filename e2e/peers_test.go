package e2e

import (
	"strings"
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

// TestReloadRefusesBadConfig sends SIGHUP after breaking the config file,
// and after changing the [Interface] section (which needs a restart): the
// agent must keep running with what it had, say so, and keep its peers.
func TestReloadRefusesBadConfig(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	nodes := startMesh(t, l, kernel, kernel)
	a, b := nodes[0], nodes[1]
	if msg, ok := reach(ctx, a, b, 20*time.Second); !ok {
		t.Fatalf("before reload: %s", msg)
	}
	good := a.agent.Config

	broken := good
	broken.Peers = append([]lab.PeerConfig(nil), good.Peers...)
	broken.ListenPort = 0 // left out, so the next line is the only one
	broken.Extra = []string{"ListenPort = not-a-port"}
	changed := good
	changed.ListenPort = good.ListenPort + 1

	for _, tc := range []struct {
		name string
		cfg  lab.AgentConfig
	}{
		{"syntax error", broken},
		{"interface change", changed},
	} {
		err := a.agent.Reload(ctx, tc.cfg)
		switch {
		case err == nil:
			t.Errorf("%s: reload succeeded, want it refused", tc.name)
		case !strings.Contains(err.Error(), "refused the new config"):
			t.Errorf("%s: %v, want the agent to log that it refused the config", tc.name, err)
		case !strings.Contains(err.Error(), "ListenPort"):
			t.Errorf("%s: %v, want the error to name ListenPort", tc.name, err)
		default:
			t.Logf("%s: %v", tc.name, err)
		}
		if !a.agent.Proc.Alive() {
			t.Fatalf("%s: agent exited after SIGHUP: %v", tc.name, a.agent.Proc.Wait(ctx))
		}
		if msg, ok := reach(ctx, a, b, 10*time.Second); !ok {
			t.Errorf("%s: after the refused reload, %s → %s: %s", tc.name, a.host.Name, b.host.Name, msg)
		}
	}
}
