package agent

import (
	"maps"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/gossip"
	"github.com/uncloud-mesh/uncloud/meshaddr"
)

func TestReachableSet(t *testing.T) {
	now := time.Now()
	known := []membership.Known{{ID: "a", Subnet: 1}, {ID: "b", Subnet: 2}, {ID: "c", Subnet: 3}, {ID: "d", Subnet: 4}, {ID: "e", Subnet: 5}, {ID: "f", Subnet: 6}}
	members := []gossip.Member{{Name: "a", State: gossip.Alive}, {Name: "b", State: gossip.Alive},
		{Name: "c", State: gossip.Alive}, {Name: "d", State: gossip.Dead}, {Name: "e", State: gossip.Alive}, {Name: "f", State: gossip.Alive}}
	heardAt := map[meshaddr.Subnet]time.Time{
		2: now.Add(-time.Second),     // b: alive, heard a second ago
		3: now.Add(-6 * time.Second), // c: alive (others probe it for us), silent past silentAfter
		4: now.Add(-time.Second),     // d: heard, but gossip says dead
		5: {},                        // e: a peer never heard
		// f: no WireGuard peer at all
	}
	got := reachableSet("a", members, heardAt, known, now)
	want := map[string]bool{"a": true, "b": true}
	if !maps.Equal(got, want) {
		t.Fatalf("reachable %v, want %v (self, and alive and heard within %v only)", got, want, silentAfter)
	}
}
