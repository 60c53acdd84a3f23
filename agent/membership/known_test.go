package membership

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt/crdttest"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/tun"
)

func TestBuildKnown(t *testing.T) {
	k, _ := tun.GeneratePrivateKey()
	rec := &record.Machine{ID: "a", Subnet: "10.210.2.0/24", IdentityKey: "from-record"}
	gone := &record.Machine{ID: "gone", Subnet: "10.210.3.0/24", IdentityKey: "old"}
	bad := &record.Machine{ID: "bad", Subnet: "10.210.3.7/24", IdentityKey: "bad"}
	seed := func(id, prefix, identity string) Seed {
		return Seed{MachineID: id, Subnet: netip.MustParsePrefix(prefix), IdentityKey: identity, WireGuardKey: k.PublicKey()}
	}
	revoked := map[string]*record.Revoked{"gone": {MachineID: "gone"}}
	for _, tc := range []struct {
		name    string
		records []*record.Machine
		revoked map[string]*record.Revoked
		seeds   []Seed
		want    string
	}{
		{"nothing", nil, nil, nil, "map[]"},
		{"seeds before records replicate", nil, nil, []Seed{seed("a", "10.210.2.0/24", "from-seed")}, "map[a:from-seed]"},
		{"records win over seeds", []*record.Machine{rec}, nil, []Seed{seed("a", "10.210.2.0/24", "from-seed")}, "map[a:from-record]"},
		{"revoked never known, by record or seed", []*record.Machine{rec, gone}, revoked,
			[]Seed{seed("gone", "10.210.3.0/24", "old"), seed("new", "10.210.4.0/24", "pending")}, "map[a:from-record new:pending]"},
		{"a seed without id cannot be called", nil, nil, []Seed{seed("", "10.210.5.0/24", "x")}, "map[]"},
		{"a record with a bad subnet is skipped", []*record.Machine{bad}, nil, nil, "map[]"},
	} {
		got := map[string]string{}
		for _, m := range buildKnown(tc.records, tc.revoked, tc.seeds) {
			got[m.ID] = m.IdentityKey
		}
		if fmt.Sprint(got) != tc.want {
			t.Errorf("%s: known = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestKnownMachines: who may call the machine API, from the seeds before
// the store is attached, then from the records, and from the peer
// manager's view once it published one.
func TestKnownMachines(t *testing.T) {
	st, dir := testMachine(t)
	n2 := netip.MustParsePrefix("10.210.2.0/24")
	st.Seeds = []Seed{{Name: "seed", MachineID: "seed", Subnet: n2, Address: n2.Addr().Next()}}
	idSeed, _ := api.NewIdentity(make([]byte, 32))
	st.Seeds[0].IdentityKey = api.EncodeKey(idSeed.PublicKey())
	m, err := New(Config{DataDir: dir, State: st, MachineAPIPort: 51822})
	if err != nil {
		t.Fatal(err)
	}
	// Before the store is up: the seeds.
	if id, err := m.AuthorizeMachine(idSeed.PublicKey()); err != nil || id != "seed" {
		t.Fatalf("AuthorizeMachine(seed) = %q, %v", id, err)
	}
	if url, err := m.MachineAPIURL("seed"); err != nil || url != "https://10.210.2.1:51822" {
		t.Fatalf("MachineAPIURL(seed) = %q, %v", url, err)
	}
	if pub, err := m.IdentityByAddr(netip.MustParseAddr("10.210.2.1")); err != nil || !pub.Equal(idSeed.PublicKey()) {
		t.Fatalf("IdentityByAddr = %v, %v", pub, err)
	}

	store := crdttest.Open(t, "self")
	m.Attach(Parts{Records: store})
	ctx := context.Background()
	// The seed's record replicated with a new identity key: the record wins.
	idRec, _ := api.NewIdentity(append(make([]byte, 31), 1))
	rec := &record.Machine{ID: "seed", Name: "seed", Subnet: "10.210.2.0/24", IdentityKey: api.EncodeKey(idRec.PublicKey())}
	if err := store.Put(ctx, rec.Key(), rec); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AuthorizeMachine(idSeed.PublicKey()); err != api.ErrUnknownMachine {
		t.Fatalf("the seed's old key after its record replicated: %v", err)
	}
	if id, err := m.AuthorizeMachine(idRec.PublicKey()); err != nil || id != "seed" {
		t.Fatalf("AuthorizeMachine(record key) = %q, %v", id, err)
	}
	// Revoked: never known again, whatever the records and seeds say.
	rv := &record.Revoked{MachineID: "seed", IdentityKey: rec.IdentityKey}
	if err := store.Put(ctx, rv.Key(), rv); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AuthorizeMachine(idRec.PublicKey()); err != api.ErrUnknownMachine {
		t.Fatalf("a revoked machine is authorized: %v", err)
	}
	if _, err := m.MachineAPIURL("seed"); err == nil || !strings.Contains(err.Error(), "not known here yet") {
		t.Fatalf("MachineAPIURL of a revoked machine: %v", err)
	}
	if _, err := m.IdentityByAddr(netip.MustParseAddr("10.210.2.1")); err == nil {
		t.Fatal("a revoked machine's address is pinned")
	}
	// The peer manager's view, once published, is what counts.
	_, seeds := m.PeerSeeds(m.now())
	m.SetKnown(nil, m.Revoked(ctx), seeds)
	if _, err := m.AuthorizeMachine(idSeed.PublicKey()); err != api.ErrUnknownMachine {
		t.Fatalf("a revoked seed is authorized from the published view: %v", err)
	}
}
