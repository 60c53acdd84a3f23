package runtime

import (
	"testing"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// TestNewAcceptsEveryPlanMTU: whatever underlay a machine has, the tunnel
// MTU the plan derives from it is one the runtime takes (a 1400-byte
// uplink gives 1276, which once made every `uncloud run` fail).
func TestNewAcceptsEveryPlanMTU(t *testing.T) {
	for underlay := meshaddr.MinUnderlayMTU - 100; underlay <= meshaddr.MaxUnderlayMTU; underlay++ {
		mtu, _ := meshaddr.TunnelMTU(underlay)
		r, err := New(Config{Subnet: 3, MTU: mtu, Firewall: &IPTables{}})
		if err != nil {
			t.Fatalf("underlay %d, tunnel MTU %d: %v", underlay, mtu, err)
		}
		r.Close()
	}
	for _, tc := range []struct {
		subnet meshaddr.Subnet
		mtu    int
	}{{3, meshaddr.MinTunnelMTU - 1}, {3, meshaddr.MaxUnderlayMTU + 1}, {0, 1376}, {255, 1376}} {
		if _, err := New(Config{Subnet: tc.subnet, MTU: tc.mtu}); err == nil {
			t.Errorf("New(subnet %d, MTU %d) succeeded, want an error", tc.subnet, tc.mtu)
		}
	}
}
