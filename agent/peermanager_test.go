package agent

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

func machineRecord(t *testing.T, id string, subnet int) (*record.Machine, tun.Key) {
	t.Helper()
	k, _ := tun.GeneratePrivateKey()
	return &record.Machine{
		ID: id, Name: id, Subnet: fmt.Sprintf("10.210.%d.0/24", subnet),
		WireGuardKey: k.PublicKey().String(), Endpoints: []string{fmt.Sprintf("198.18.0.%d:51820", subnet)},
	}, k.PublicKey()
}

func TestDesiredPeers(t *testing.T) {
	self, _ := machineRecord(t, "self", 1)
	b, bKey := machineRecord(t, "b", 2)
	c, _ := machineRecord(t, "c", 3)
	clash, _ := machineRecord(t, "clash", 3)
	badKey, _ := machineRecord(t, "badkey", 4)
	badKey.WireGuardKey = "nope"
	joinRange, _ := machineRecord(t, "joinrange", 0)
	outside := &record.Machine{ID: "outside", WireGuardKey: bKey.String(), Subnet: "192.168.0.0/24"}

	var warnings []string
	warn := func(msg string, _ ...any) { warnings = append(warnings, msg) }
	machines := map[string]*record.Machine{}
	for _, m := range []*record.Machine{self, b, c, clash, badKey, joinRange, outside} {
		machines[record.MachinesPrefix+m.ID] = m
	}
	peers := desiredPeers("self", nil, machines, warn)
	if len(peers) != 1 || peers[0].PublicKey != bKey {
		t.Fatalf("peers = %+v, want only b (c and clash share a subnet; the rest are invalid)", peers)
	}
	p := peers[0]
	if p.AllowedIPs[0] != netip.MustParsePrefix("10.210.2.0/24") || p.Endpoint != netip.MustParseAddrPort("198.18.0.2:51820") ||
		p.PersistentKeepalive != tun.DefaultKeepalive {
		t.Fatalf("peer b = %+v", p)
	}
	if len(warnings) != 4 {
		t.Fatalf("warnings = %q, want 4 (bad key, join range, outside mesh, subnet clash)", warnings)
	}
}

func TestDesiredPeersFallsBackToSeeds(t *testing.T) {
	k, _ := tun.GeneratePrivateKey()
	seed := membership.Seed{Name: "s", WireGuardKey: k.PublicKey(), Address: netip.MustParseAddr("10.210.5.1"),
		Subnet: netip.MustParsePrefix("10.210.5.0/24"), Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.18.0.5:51820")}}
	peers := desiredPeers("self", []membership.Seed{seed}, nil, func(string, ...any) {})
	if len(peers) != 1 || peers[0].PublicKey != seed.WireGuardKey || peers[0].Endpoint != seed.Endpoints[0] {
		t.Fatalf("seed peers = %+v", peers)
	}
	// Once the seed's record replicated, the record wins (it may carry
	// newer endpoints) and the seed adds nothing.
	rec := &record.Machine{ID: "s", Subnet: "10.210.5.0/24", WireGuardKey: seed.WireGuardKey.String(), Endpoints: []string{"198.18.9.9:51820"}}
	peers = desiredPeers("self", []membership.Seed{seed}, map[string]*record.Machine{"/machines/s": rec}, func(string, ...any) {})
	if len(peers) != 1 || peers[0].Endpoint != netip.MustParseAddrPort("198.18.9.9:51820") {
		t.Fatalf("peers with record = %+v", peers)
	}
}
