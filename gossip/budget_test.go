package gossip

import (
	"net/netip"
	"testing"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// TestPacketBudgetFitsEveryTunnel ties gossip's packet budget to the address
// plan: a full-size gossip datagram (payload + IPv4 + UDP) must fit the
// smallest tunnel MTU any machine may have, and memberlist must really be
// configured with that budget (it adds its CRC header on top of
// UDPBufferSize).
func TestPacketBudgetFitsEveryTunnel(t *testing.T) {
	if MaxWirePacket+20+8 > meshaddr.MinTunnelMTU {
		t.Errorf("MaxWirePacket %d + 28 > meshaddr.MinTunnelMTU %d: gossip would fragment on a 1280-byte underlay", MaxWirePacket, meshaddr.MinTunnelMTU)
	}
	cfg := Config{Name: "m1", BindAddr: netip.MustParseAddrPort("10.210.1.1:7946")}
	for name, tm := range map[string]timing{"production": production(), "test": *testTiming()} {
		c := memberlistConfig(cfg, tm)
		if got := c.UDPBufferSize + crcOverhead; got != MaxWirePacket {
			t.Errorf("%s: memberlist UDPBufferSize %d + CRC %d = %d, want MaxWirePacket %d", name, c.UDPBufferSize, crcOverhead, got, MaxWirePacket)
		}
		if c.EnableCompression {
			t.Errorf("%s: compression on; the budget assumes none", name)
		}
	}
}
