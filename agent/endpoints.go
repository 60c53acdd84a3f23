package agent

import (
	"net/netip"

	"github.com/uncloud-mesh/uncloud/agent/membership"
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
	return membership.CandidateEndpoints(d.state.PublicIP, d.state.ListenPort)
}

// Endpoints travel as strings in records and requests.
var (
	endpointStrings = membership.EndpointStrings
	parseEndpoints  = membership.ParseEndpoints
)
