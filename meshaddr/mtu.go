package meshaddr

import "fmt"

// Tunnel MTU. An encrypted packet crosses the underlay as
//
//	underlay IP (40, IPv6 worst case) + UDP (8) + WireGuard (32) + inner packet
//
// and, when a pair is relayed, the relay puts RelayOverhead bytes in front of
// the WireGuard datagram. The tunnel MTU keeps the relay's room on every path,
// direct ones too: a pair switches between direct and relayed at any moment
// without telling the tunnel, and the Docker network takes the tunnel MTU at
// creation and cannot change it under running containers. Without the room,
// every full-size relayed datagram left as two IP fragments (measured:
// relayed throughput 93–108 Mbit/s at 1420, 106–127 at 1376; direct paths
// showed no difference).
const (
	// WireGuardOverhead is IPv6 (40) + UDP (8) + WireGuard data header and
	// tag (32): wg-quick's 1500 - 1420.
	WireGuardOverhead = 80
	// RelayOverhead is the header the nat relay puts before a datagram.
	RelayOverhead = 44
	// MinUnderlayMTU is the smallest underlay in spec: IPv6's minimum link MTU.
	MinUnderlayMTU = 1280
	// MaxUnderlayMTU is the largest underlay the plan follows (jumbo frames).
	MaxUnderlayMTU = 9000
	// MaxTunnelMTU caps the tunnel at what a 1500-byte underlay gives, so a
	// jumbo-frame LAN does not produce packets that the first ordinary hop
	// (or a relayed path through the internet) would have to fragment.
	MaxTunnelMTU = 1500 - WireGuardOverhead - RelayOverhead // 1376
	// MinTunnelMTU is what the smallest in-spec underlay gives. It is below
	// IPv6's 1280, which is fine: the mesh and containers are IPv4 only.
	MinTunnelMTU = MinUnderlayMTU - WireGuardOverhead - RelayOverhead // 1156
)

// TunnelMTU is min(MaxTunnelMTU, underlay - WireGuardOverhead -
// RelayOverhead). An underlay below MinUnderlayMTU is out of spec (it
// cannot carry IPv6): the answer is then MinTunnelMTU, with an error saying
// so, which the caller logs as a warning and otherwise ignores.
func TunnelMTU(underlay int) (int, error) {
	if underlay < MinUnderlayMTU {
		return MinTunnelMTU, fmt.Errorf("underlay MTU %d is below the minimum %d; using tunnel MTU %d", underlay, MinUnderlayMTU, MinTunnelMTU)
	}
	return min(MaxTunnelMTU, underlay-WireGuardOverhead-RelayOverhead), nil
}

// IPv4UDPHeaders is what an IPv4 UDP datagram inside the tunnel adds to
// its payload.
const IPv4UDPHeaders = 20 + 8

// MaxUDPPayload is the largest UDP payload that crosses the mesh unfragmented
// between any two machines, whatever their underlays: the smallest tunnel
// MTU any machine may have, minus IPv4 and UDP headers (1128).
const MaxUDPPayload = MinTunnelMTU - IPv4UDPHeaders
