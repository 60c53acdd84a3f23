package gossip

import (
	"context"
	"testing"
	"time"
)

// TestMemberCounts: three members alive everywhere; one leaves and the
// others count it as left, not alive.
func TestMemberCounts(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	waitFor(t, 20*time.Second, "3 members everywhere", func() bool { return converged(nodes, 3) })
	for _, n := range nodes {
		if got := n.MemberCounts(); got[Alive] != 3 || len(got) != 1 {
			t.Fatalf("%s counts %v, want 3 alive", n.LocalName(), got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nodes[2].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "m02 counted as gone", func() bool {
		c := nodes[0].MemberCounts()
		return c[Alive] == 2 && c[Left]+c[Dead] == 1
	})
	if c := nodes[0].MemberCounts(); c[Left] != 1 {
		t.Errorf("after a leave: %v, want it left (not dead)", c)
	}
}
