package membership

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt/crdttest"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

// TestRevokedSeedsGetNoPeer: a seed the revoked set names (by ID, or by
// key for an admitted machine) is neither a peer nor known, and is
// dropped from the machine state on disk, so the next start does not
// peer with it before its store has opened.
func TestRevokedSeedsGetNoPeer(t *testing.T) {
	store := crdttest.Open(t, "self")
	m := newTestMembers(t, Parts{Records: store, Calls: newFakeCalls(), Device: &fakeDevice{}})
	seed := func(id string, n int) Seed {
		k, _ := tun.GeneratePrivateKey()
		return Seed{Name: id, MachineID: id, IdentityKey: "identity-of-" + id, WireGuardKey: k.PublicKey(),
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 210, byte(n), 0}), 24)}
	}
	good, gone, admitted := seed("good", 2), seed("gone", 3), seed("admitted", 4)
	if _, err := m.UpdateState(func(st *MachineState) error { st.Seeds = []Seed{good, gone}; return nil }); err != nil {
		t.Fatal(err)
	}
	m.tokens.Pending = append(m.tokens.Pending, PendingJoin{Seed: admitted, Until: time.Now().Add(time.Hour)})
	names := func(seeds []Seed) map[string]bool {
		out := map[string]bool{}
		for _, s := range seeds {
			out[s.MachineID] = true
		}
		return out
	}
	if _, seeds := m.PeerSeeds(time.Now()); len(seeds) != 3 {
		t.Fatalf("before any revocation: seeds %v", names(seeds))
	}
	ctx := context.Background()
	for _, rv := range []*record.Revoked{
		{MachineID: "gone"},
		{MachineID: "some-other-id", WireGuardKey: admitted.WireGuardKey.String()},
	} {
		if err := store.Put(ctx, rv.Key(), rv); err != nil {
			t.Fatal(err)
		}
	}
	_, seeds := m.PeerSeeds(time.Now())
	if got := names(seeds); len(got) != 1 || !got["good"] {
		t.Fatalf("after revocations: seeds %v, want only good", got)
	}
	for _, k := range m.Known(ctx) {
		if k.ID == "gone" || k.ID == "admitted" {
			t.Fatalf("revoked seed %s is known", k.ID)
		}
	}
	onDisk, err := LoadMachineState(m.cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(onDisk.Seeds); len(got) != 1 || !got["good"] {
		t.Fatalf("machine state on disk keeps seeds %v, want only good", got)
	}
}
