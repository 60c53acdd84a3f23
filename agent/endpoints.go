package agent

import (
	"net/netip"

	"github.com/uncloud-mesh/uncloud/nat"
)

// candidateEndpoints are the underlay endpoints at which other machines
// may reach this one, as published in its record. Once the NAT layer runs
// they are its candidates (configured, interfaces, reflexive); before
// that, the configured public address and the interface addresses.
func (d *Daemon) candidateEndpoints() []netip.AddrPort {
	if d.nat != nil {
		if c := d.nat.candidates.Load(); c != nil {
			return *c
		}
	}
	return candidateEndpoints(d.state.PublicIP, d.state.ListenPort)
}

func candidateEndpoints(publicIP netip.Addr, port uint16) []netip.AddrPort {
	var public []netip.AddrPort
	if publicIP.IsValid() {
		public = append(public, netip.AddrPortFrom(publicIP, port))
	}
	ifaces, _ := nat.HostInterfaces()
	f := nat.DefaultFilter()
	return nat.Candidates(public, nat.InterfaceCandidates(ifaces, f, port), nil, f)
}

func endpointStrings(eps []netip.AddrPort) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.String()
	}
	return out
}
