package agent

import (
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/gossip"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/tun"
)

func TestReachableSet(t *testing.T) {
	now := time.Now()
	known := []membership.Known{{ID: "a", Subnet: 1}, {ID: "b", Subnet: 2}, {ID: "c", Subnet: 3}, {ID: "d", Subnet: 4}, {ID: "e", Subnet: 5}}
	peer := func(subnet meshaddr.Subnet, hs time.Time) tun.PeerStatus {
		return tun.PeerStatus{Peer: tun.Peer{AllowedIPs: []netip.Prefix{subnet.Prefix()}}, LastHandshake: hs}
	}
	members := []gossip.Member{{Name: "a", State: gossip.Alive}, {Name: "b", State: gossip.Alive},
		{Name: "c", State: gossip.Alive}, {Name: "d", State: gossip.Dead}, {Name: "e", State: gossip.Alive}}
	peers := []tun.PeerStatus{
		peer(2, now.Add(-10*time.Second)), // b: alive, fresh session
		peer(3, now.Add(-5*time.Minute)),  // c: alive (others probe it for us), session long dead
		peer(4, now.Add(-time.Second)),    // d: fresh session, but gossip says dead
		peer(5, time.Time{}),              // e: never handshaked
	}
	got := reachableSet("a", members, peers, known, now)
	want := map[string]bool{"a": true, "b": true}
	if !maps.Equal(got, want) {
		t.Fatalf("reachable %v, want %v (self, and alive with a fresh session only)", got, want)
	}
}
