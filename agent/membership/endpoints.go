package membership

import (
	"net/netip"

	"github.com/uncloud-mesh/uncloud/nat"
)

// CandidateEndpoints are the underlay endpoints a machine can offer
// before its NAT layer runs: the configured public address and the
// interface addresses.
func CandidateEndpoints(publicIP netip.Addr, port uint16) []netip.AddrPort {
	var public []netip.AddrPort
	if publicIP.IsValid() {
		public = append(public, netip.AddrPortFrom(publicIP, port))
	}
	ifaces, _ := nat.HostInterfaces()
	f := nat.DefaultFilter()
	return nat.Candidates(public, nat.InterfaceCandidates(ifaces, f, port), nil, f)
}

// EndpointStrings is how endpoints travel in records and requests.
func EndpointStrings(eps []netip.AddrPort) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.String()
	}
	return out
}

// ParseEndpoints reads endpoints from records, skipping malformed ones.
func ParseEndpoints(ss []string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range ss {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			out = append(out, ap)
		}
	}
	return out
}
