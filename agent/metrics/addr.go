package metrics

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// MeshHost is the host part of a listen address that means "this
// machine's mesh address", which init and join cannot know before the
// machine has a subnet: --metrics-addr mesh:9101.
const MeshHost = "mesh"

// ParseAddr checks a --metrics-addr and resolves "mesh:PORT" with the
// machine's mesh address (an invalid mesh leaves it unresolved, for a
// check before the machine has one). An address must be an IP and port;
// the IP must be loopback or on the mesh, which no one outside the
// network reaches, unless public is set (--metrics-public): then any
// address, including all interfaces (":9101"), is allowed.
func ParseAddr(addr string, mesh netip.Addr, public bool) (netip.AddrPort, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("metrics address %q: %w (want IP:PORT, e.g. 127.0.0.1:9101 or mesh:9101)", addr, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("metrics address %q: port %q is not 1-65535", addr, portText)
	}
	var ip netip.Addr
	switch host {
	case MeshHost:
		ip = mesh
		if !ip.IsValid() {
			// Checked before the machine has a subnet: any mesh address
			// stands for the one it will get.
			ip = meshaddr.Mesh().Addr()
		}
	case "":
		ip = netip.IPv4Unspecified()
	default:
		if ip, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, fmt.Errorf("metrics address %q: %q is not an IP address (names are not resolved, so what the agent listens on is what was asked)", addr, host)
		}
		ip = ip.Unmap()
	}
	if !public && !ip.IsLoopback() && !meshaddr.Mesh().Contains(ip) {
		return netip.AddrPort{}, fmt.Errorf("metrics address %q is neither loopback nor on the mesh (%v): metrics would be open to whoever reaches it; pass --metrics-public to listen there anyway", addr, meshaddr.Mesh())
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

// OnMesh tells whether the listener belongs inside the mesh (the
// netstack, in userspace mode) rather than the host's stack.
func OnMesh(ap netip.AddrPort) bool { return meshaddr.Mesh().Contains(ap.Addr()) }
