package agent

import (
	"net"
	"net/netip"

	"github.com/uncloud-mesh/uncloud/tun"
)

// candidateEndpoints are the underlay addresses at which other machines
// may reach this one: a configured public address first, then interface
// addresses (not loopback, link-local, the mesh, or Docker's bridges).
// The NAT layer adds reflexive and observed endpoints later.
func (d *Daemon) candidateEndpoints() []netip.AddrPort {
	return candidateEndpoints(d.state.PublicIP, d.state.ListenPort)
}

func candidateEndpoints(publicIP netip.Addr, port uint16) []netip.AddrPort {
	var out []netip.AddrPort
	seen := map[netip.Addr]bool{}
	add := func(a netip.Addr) {
		if a.IsValid() && !seen[a] {
			seen[a] = true
			out = append(out, netip.AddrPortFrom(a, port))
		}
	}
	add(publicIP)
	ifaces, err := net.Interfaces()
	if err != nil {
		return out
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || isContainerBridge(ifc.Name) {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipnet, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipnet.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if !ip.Is4() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || tun.DefaultMeshPrefix.Contains(ip) {
				continue
			}
			add(ip)
		}
	}
	return out
}

func isContainerBridge(name string) bool {
	for _, prefix := range []string{"docker", "br-", "veth", "uncloud"} {
		if len(name) >= len(prefix) && name[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}

func endpointStrings(eps []netip.AddrPort) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.String()
	}
	return out
}
