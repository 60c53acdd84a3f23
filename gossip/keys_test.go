package gossip

import (
	"context"
	"testing"
	"time"
)

func TestKeyRotation(t *testing.T) {
	oldKey, newKey := testKey, []byte("NEWKEY0123456789NEWKEY0123456789")
	nodes := startCluster(t, 3, nil)
	waitFor(t, 5*time.Second, "cluster of 3", func() bool { return converged(nodes, 3) })
	ins := make([]*inbox, len(nodes))
	for i, n := range nodes {
		ins[i] = subscribe(n, "t")
	}
	for _, step := range [][][]byte{{oldKey, newKey}, {newKey}} {
		for _, n := range nodes {
			if err := n.SetKeys(step); err != nil {
				t.Fatalf("SetKeys: %v", err)
			}
		}
	}
	// Everyone holds only the new key now: a broadcast from each member
	// reaching every other one shows gossip packets flow under it in
	// every direction (rather than hoping half a second is long enough
	// for a broken rotation to show in membership).
	for i, n := range nodes {
		if err := n.Broadcast("t", "after-rotation", stamped(i, 64)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "every member's broadcast everywhere under the new key", func() bool {
		for i, in := range ins {
			for j, n := range nodes {
				if i != j && in.count(n.LocalName()) != 1 {
					return false
				}
			}
		}
		return true
	})
	if !converged(nodes, 3) {
		t.Fatalf("rotation broke the cluster")
	}
	tests := []struct {
		name    string
		key     []byte
		wantIn  bool
		machine int
	}{
		{"old key is locked out", oldKey, false, 7},
		{"new key gets in", newKey, true, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(t, tt.machine)
			c.Keys = [][]byte{tt.key}
			n := startNode(t, c)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, err := n.Join(ctx, []string{nodes[0].Addr().String()})
			if (err == nil) != tt.wantIn {
				t.Fatalf("Join err = %v, want success %v", err, tt.wantIn)
			}
			if tt.wantIn {
				waitFor(t, 5*time.Second, "newcomer seen", func() bool { return len(nodes[1].Members()) == 4 })
			}
		})
	}
	if err := nodes[0].SetKeys([][]byte{[]byte("short")}); err == nil {
		t.Errorf("SetKeys accepted an invalid key")
	}
}
