package gossip

import (
	"errors"
	"testing"
	"time"
)

// TestPingAndReconnect: a member this machine has declared dead still
// answers a direct Ping once the path is back, and Reconnect then heals
// membership at once, with no rejoin timer (an hour here) to wait for.
// A Ping across the split fails, a Ping of a stranger says so.
func TestPingAndReconnect(t *testing.T) {
	inMemory(t, func(t *testing.T, onMemNet func(int, *Config)) {
		const size = 3
		nodes, filters := startFilteredCluster(t, size, onMemNet, func(i int, c *Config) {
			c.RejoinInterval = time.Hour
		})
		waitFor(t, 5*time.Second, "cluster of 3", func() bool { return converged(nodes, size) })
		a, b := nodes[0], nodes[2]
		if _, err := a.Ping(b.LocalName()); err != nil {
			t.Fatalf("ping of a live member: %v", err)
		}
		if _, err := a.Ping("nobody"); !errors.Is(err, ErrUnknownMember) {
			t.Errorf("ping of a stranger: %v, want ErrUnknownMember", err)
		}
		if a.Reconnect(b.LocalName()) {
			t.Error("Reconnect started with a member that is alive")
		}
		for i := range nodes {
			if i != 2 {
				filters[i].block(b.Addr())
			}
		}
		filters[2].block(nodes[0].Addr(), nodes[1].Addr())
		waitFor(t, 15*time.Second, "b declared dead", func() bool { return converged(nodes[:2], 2) })
		if _, err := a.Ping(b.LocalName()); err == nil {
			t.Error("ping across the split answered")
		}
		// Past gossip-to-the-dead, as in TestNoRejoinWithoutTimer: nothing
		// in memberlist heals by itself any more.
		time.Sleep(a.timing.gossipToTheDeadTime + 500*time.Millisecond)
		for _, f := range filters {
			f.unblockAll()
		}
		if _, err := a.Ping(b.LocalName()); err != nil {
			t.Fatalf("ping of a dead member once the path is back: %v", err)
		}
		if !a.Reconnect(b.LocalName()) {
			t.Fatal("Reconnect did not start with a dead member")
		}
		start := time.Now()
		waitFor(t, 2*time.Second, "membership healed by Reconnect", func() bool { return converged(nodes, size) })
		t.Logf("healed %v after Reconnect (virtual time)", time.Since(start))
	})
}
