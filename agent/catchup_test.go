package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/gossip"
)

func TestCatchUpPlan(t *testing.T) {
	member := func(id string, x byte, st gossip.MemberState) gossip.Member {
		return gossip.Member{Name: id, Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 210, x, 1}), 7946), State: st}
	}
	known := []membership.Known{{ID: "self"}, {ID: "m2"}, {ID: "m3"}}
	tests := []struct {
		name        string
		alive       []gossip.Member
		turn        int
		wantUnknown []string
		wantAsk     string
	}{
		{"everyone has a record", []gossip.Member{member("self", 1, gossip.Alive), member("m2", 2, gossip.Alive)}, 0, nil, ""},
		{"a newcomer: ask a known member", []gossip.Member{member("self", 1, gossip.Alive), member("m2", 2, gossip.Alive), member("m3", 3, gossip.Alive), member("m9", 9, gossip.Alive)}, 0, []string{"m9"}, "10.210.2.1:7946"},
		{"the next turn asks the next one", []gossip.Member{member("m2", 2, gossip.Alive), member("m3", 3, gossip.Alive), member("m9", 9, gossip.Alive)}, 1, []string{"m9"}, "10.210.3.1:7946"},
		{"only the newcomer is alive: nobody to ask", []gossip.Member{member("self", 1, gossip.Alive), member("m9", 9, gossip.Alive)}, 0, []string{"m9"}, ""},
		{"a dead member is no helper", []gossip.Member{member("m2", 2, gossip.Dead), member("m9", 9, gossip.Alive)}, 0, []string{"m9"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unknown, ask := catchUpPlan(tt.alive, known, "self", tt.turn)
			if !slices.Equal(unknown, tt.wantUnknown) || ask != tt.wantAsk {
				t.Fatalf("catchUpPlan = %v, %q; want %v, %q", unknown, ask, tt.wantUnknown, tt.wantAsk)
			}
		})
	}
}
