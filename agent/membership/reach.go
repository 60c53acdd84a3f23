package membership

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/nat"
	"github.com/uncloud-mesh/uncloud/tun"
)

// Reachability is what this machine knows about who can be reached from
// outside a NAT, from its NAT layer: a joiner has no mesh yet, so it can
// reach an issuer only at an endpoint that takes unsolicited packets.
type Reachability struct {
	// NAT is this machine's NAT type as its NAT layer classified it.
	NAT nat.Type
	// Public says this machine has a configured public endpoint
	// (--public-ip, or a port forward in nat.json).
	Public bool
	// PeerNAT is the NAT type each peer says of itself, by WireGuard key.
	PeerNAT map[tun.Key]nat.Type
}

// unreachableFromOutside reports whether this machine is known to sit
// behind a NAT with no public endpoint: endpoint-independent or symmetric
// NATs take no packet from an address the machine has not sent to, so a
// joiner's handshake would never arrive (the joiner would wait out its
// timeouts and fail). An unknown NAT type (a machine alone, or just
// started) is given the benefit of the doubt.
func (r Reachability) unreachableFromOutside() bool {
	return !r.Public && (r.NAT == nat.TypeEndpointIndependent || r.NAT == nat.TypeSymmetric)
}

// checkIssuerReachable refuses a token that could only fail: this machine
// cannot be reached from outside its NAT. It names the members that can
// (those whose NAT layer says they sit behind none), with their endpoints.
func (m *Members) checkIssuerReachable(ctx context.Context, req api.TokenRequest) error {
	if m.cfg.Reach == nil || req.Local {
		return nil
	}
	r := m.cfg.Reach()
	if !r.unreachableFromOutside() {
		return nil
	}
	members, err := m.tokenMembers(ctx, -1)
	if err != nil {
		return err
	}
	var ask []string
	for _, tm := range members[1:] {
		if r.PeerNAT[tm.WireGuardKey] == nat.TypeNone && len(tm.Endpoints) > 0 {
			ask = append(ask, fmt.Sprintf("%s (%s)", tm.Name, joinAddrPorts(tm.Endpoints)))
		}
	}
	msg := fmt.Sprintf("%s is behind a NAT (%s) and has no public endpoint, so a new machine outside its network could not reach it to join", members[0].Name, r.NAT)
	if len(ask) > 0 {
		msg += "; ask a machine that can be reached for the token instead: " + strings.Join(ask, ", ")
	} else {
		msg += "; no member is known to be reachable from outside: give one a public address (init --public-ip, or a port forward in nat.json \"public\")"
	}
	msg += "; for a machine on this machine's own network, use 'uncloud token --local'"
	return fmt.Errorf("%w: %s", api.ErrConflict, msg)
}

func joinAddrPorts(eps []netip.AddrPort) string {
	return strings.Join(EndpointStrings(eps), " ")
}
