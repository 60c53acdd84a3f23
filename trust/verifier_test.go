package trust

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
)

const testNetwork = "net1"

// machine is one test machine: its keys and its signed record.
type machine struct {
	id     string
	key    ed25519.PrivateKey
	signer *Signer
	rec    *record.Machine
}

func newMachine(t *testing.T, id string, subnet meshaddr.Subnet) *machine {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wg := make([]byte, 32)
	rand.Read(wg)
	rec := &record.Machine{ID: id, Name: id, Subnet: subnet.String(),
		IdentityKey: EncodeKey(key.Public().(ed25519.PublicKey)), WireGuardKey: EncodeKey(ed25519.PublicKey(wg))}
	return &machine{id: id, key: key, signer: NewSigner(id, key), rec: rec}
}

func (m *machine) subject() record.Membership {
	return record.Membership{Network: testNetwork, ID: m.id, IdentityKey: m.rec.IdentityKey,
		WireGuardKey: m.rec.WireGuardKey, Subnet: m.rec.Subnet}
}

// admit has issuer sign m's membership.
func admit(t *testing.T, issuer, m *machine, at time.Time) {
	t.Helper()
	ms, err := issuer.signer.Issue(m.subject(), at)
	if err != nil {
		t.Fatal(err)
	}
	m.rec.Membership = ms
}

// sign is r as stored when written by signer (nil: unsigned).
func sign(t *testing.T, r record.Record, signer crdt.Signer) crdt.Signed {
	t.Helper()
	raw, err := crdt.EncodeSigned(r, signer)
	if err != nil {
		t.Fatal(err)
	}
	s, err := crdt.DecodeSigned(r.Key(), raw)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// world is a network: root a admitted itself, a admitted b, b admitted c.
type world struct {
	a, b, c  *machine
	machines []crdt.Signed
	revoked  []crdt.Signed
}

func newWorld(t *testing.T) *world {
	w := &world{a: newMachine(t, "a", 1), b: newMachine(t, "b", 2), c: newMachine(t, "c", 3)}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	admit(t, w.a, w.a, t0)
	admit(t, w.a, w.b, t0.Add(time.Minute))
	admit(t, w.b, w.c, t0.Add(2*time.Minute))
	for _, m := range []*machine{w.a, w.b, w.c} {
		w.machines = append(w.machines, sign(t, m.rec, m.signer))
	}
	return w
}

func (w *world) verifier(t *testing.T) *Verifier {
	t.Helper()
	v, err := NewVerifier(Config{Network: testNetwork, Root: w.a.key.Public().(ed25519.PublicKey), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	v.Reset(w.machines, w.revoked)
	return v
}

// revoke has by remove target, keeping what by lists.
func (w *world) revoke(t *testing.T, by, target *machine, kept ...string) crdt.Signed {
	rv := &record.Revoked{MachineID: target.id, IdentityKey: target.rec.IdentityKey, WireGuardKey: target.rec.WireGuardKey,
		By: by.id, At: time.Now(), Kept: kept, Membership: target.rec.Membership}
	s := sign(t, rv, by.signer)
	w.revoked = append(w.revoked, s)
	return s
}

// remove is machine rm: the revocation, and the record deleted.
func (w *world) remove(t *testing.T, by, target *machine, kept ...string) {
	w.revoke(t, by, target, kept...)
	for i, m := range w.machines {
		if m.Key == target.rec.Key() {
			w.machines = append(w.machines[:i:i], w.machines[i+1:]...)
			break
		}
	}
}

func members(v *Verifier) string {
	var out []string
	for _, id := range []string{"a", "b", "c", "x"} {
		if v.Member(id) {
			out = append(out, id)
		}
	}
	return fmt.Sprint(out)
}

func TestMembership(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, w *world)
		want  string
	}{
		{"a chain to the root", func(t *testing.T, w *world) {}, "[a b c]"},
		{"self-admitted machine that is not the root", func(t *testing.T, w *world) {
			x := newMachine(t, "x", 9)
			admit(t, x, x, time.Now())
			w.machines = append(w.machines, sign(t, x.rec, x.signer))
		}, "[a b c]"},
		{"member rewrites another's record with its own keys", func(t *testing.T, w *world) {
			forged := *w.c.rec
			forged.IdentityKey = w.b.rec.IdentityKey
			w.machines[2] = sign(t, &forged, w.b.signer)
		}, "[a b]"},
		{"member re-signs another's record unchanged", func(t *testing.T, w *world) {
			w.machines[2] = sign(t, w.c.rec, w.b.signer)
		}, "[a b]"},
		{"membership for another network", func(t *testing.T, w *world) {
			x := newMachine(t, "x", 9)
			sub := x.subject()
			sub.Network = "other"
			ms, _ := w.a.signer.Issue(sub, time.Now())
			x.rec.Membership = ms
			w.machines = append(w.machines, sign(t, x.rec, x.signer))
		}, "[a b c]"},
		{"tampered membership (subnet changed after signing)", func(t *testing.T, w *world) {
			x := newMachine(t, "x", 9)
			admit(t, w.a, x, time.Now())
			x.rec.Subnet, x.rec.Membership.Subnet = meshaddr.Subnet(10).String(), meshaddr.Subnet(10).String()
			w.machines = append(w.machines, sign(t, x.rec, x.signer))
		}, "[a b c]"},
		{"claiming a member's subnet: the earlier admission keeps it", func(t *testing.T, w *world) {
			x := newMachine(t, "x", 3)
			admit(t, w.b, x, time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
			w.machines = append(w.machines, sign(t, x.rec, x.signer))
		}, "[a b c]"},
		{"removed machine: it and what it admitted after are out, kept admissions stay", func(t *testing.T, w *world) {
			x := newMachine(t, "x", 9)
			admit(t, w.b, x, time.Now()) // b's admission the remover never saw
			w.machines = append(w.machines, sign(t, x.rec, x.signer))
			w.remove(t, w.a, w.b, crdt.SignatureDigest(w.c.rec.Membership.Sig))
		}, "[a c]"},
		{"removal without keeping: what it admitted goes too", func(t *testing.T, w *world) {
			w.remove(t, w.a, w.b)
		}, "[a]"},
		{"removed machine removes a bystander afterwards: void", func(t *testing.T, w *world) {
			w.revoke(t, w.a, w.b, crdt.SignatureDigest(w.c.rec.Membership.Sig))
			w.revoke(t, w.b, w.c)
		}, "[a c]"},
		{"two sides remove each other: both stay removed", func(t *testing.T, w *world) {
			w.revoke(t, w.a, w.b, crdt.SignatureDigest(w.c.rec.Membership.Sig))
			w.revoke(t, w.b, w.a)
		}, "[c]"},
		{"the root removed by a machine it admitted: the remover and what the root admitted stay", func(t *testing.T, w *world) {
			w.remove(t, w.b, w.a, crdt.SignatureDigest(w.b.rec.Membership.Sig))
		}, "[b c]"},
		{"a removal that carries a made-up membership for the removed", func(t *testing.T, w *world) {
			x := newMachine(t, "x", 9)
			admit(t, x, x, time.Now()) // not the root
			w.revoke(t, w.b, x)
			y := newMachine(t, "y", 10)
			admit(t, x, y, time.Now()) // "admitted" by the invented machine
			w.machines = append(w.machines, sign(t, y.rec, y.signer))
		}, "[a b c]"},
		{"revocation signed by a stranger", func(t *testing.T, w *world) {
			x := newMachine(t, "x", 9)
			w.revoke(t, x, w.a)
		}, "[a b c]"},
		{"revocation whose By names another machine", func(t *testing.T, w *world) {
			rv := &record.Revoked{MachineID: "c", IdentityKey: w.c.rec.IdentityKey, By: "a", At: time.Now()}
			w.revoked = append(w.revoked, sign(t, rv, w.b.signer))
		}, "[a b c]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			tc.setup(t, w)
			if got := members(w.verifier(t)); got != tc.want {
				t.Fatalf("members = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestCheckRecords(t *testing.T) {
	w := newWorld(t)
	svc := &record.Service{Name: "web"}
	keptSvc := sign(t, svc, w.b.signer)
	removal := w.revoke(t, w.a, w.b, keptSvc.Digest(), crdt.SignatureDigest(w.c.rec.Membership.Sig))
	afterward := w.revoke(t, w.b, w.c) // void: b is removed and this was not kept
	v := w.verifier(t)
	if err := v.Check(removal); err != nil {
		t.Errorf("an effective removal: %v", err)
	}
	if err := v.Check(afterward); err == nil {
		t.Error("a removal signed by an already removed machine was believed")
	}
	for _, tc := range []struct {
		name string
		s    crdt.Signed
		want error
	}{
		{"own container", sign(t, &record.Container{MachineID: "c", ID: "1"}, w.c.signer), nil},
		{"another machine's container", sign(t, &record.Container{MachineID: "c", ID: "1"}, w.a.signer), ErrWrongSigner},
		{"unsigned", sign(t, &record.Service{Name: "web"}, nil), ErrUnsigned},
		{"service by a member", sign(t, svc, w.a.signer), nil},
		{"service a removed machine signed before, kept", keptSvc, nil},
		{"service a removed machine signed after", sign(t, &record.Service{Name: "web", Mode: "global"}, w.b.signer), ErrNotMember},
		{"container of a removed machine", sign(t, &record.Container{MachineID: "b", ID: "1"}, w.b.signer), ErrNotMember},
		{"token of another issuer", sign(t, &record.Token{ID: "t", Issuer: "a"}, w.c.signer), ErrWrongSigner},
		{"machine record of a member", w.machines[0], nil},
		{"signature moved to another key", func() crdt.Signed {
			s := sign(t, &record.Service{Name: "db"}, w.a.signer)
			s.Sig = sign(t, svc, w.a.signer).Sig
			return s
		}(), ErrBadSig},
	} {
		err := v.Check(tc.s)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: Check = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestRevocationRemembered: a revocation deleted from the state (deletes
// are not signed) still counts, also after a restart.
func TestRevocationRemembered(t *testing.T) {
	w := newWorld(t)
	w.revoke(t, w.a, w.c)
	dir := t.TempDir()
	root := w.a.key.Public().(ed25519.PublicKey)
	v, err := NewVerifier(Config{Network: testNetwork, Root: root, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	v.Reset(w.machines, w.revoked)
	if v.Member("c") {
		t.Fatal("c is a member after its removal")
	}
	v2, err := NewVerifier(Config{Network: testNetwork, Root: root, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	v2.Reset(w.machines, nil) // the revocation was deleted from the state
	if v2.Member("c") || !v2.Member("b") {
		t.Fatalf("after a restart without the revocation in the state: members %s, want [a b]", members(v2))
	}
}

// TestSubnetOwnerKeeps: a member admits a newcomer into an existing
// machine's subnet with an earlier admission time; the machine that owned
// the subnet keeps it here.
func TestSubnetOwnerKeeps(t *testing.T) {
	w := newWorld(t)
	v := w.verifier(t)
	x := newMachine(t, "x", 3) // c's subnet
	admit(t, w.b, x, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	v.Reset(append(w.machines, sign(t, x.rec, x.signer)), nil)
	if got := members(v); got != "[a b c]" {
		t.Fatalf("members = %s, want [a b c]: the subnet's owner must keep it", got)
	}
}

// TestCertificateWriters: only machines with the ingress role write
// certificate storage.
func TestCertificateWriters(t *testing.T) {
	w := newWorld(t)
	w.a.rec.Roles = []string{IngressRole}
	w.machines[0] = sign(t, w.a.rec, w.a.signer)
	v := w.verifier(t)
	cert := &record.Cert{Name: "certificates/x/app.test/app.test.key", Data: []byte("sealed")}
	if err := v.Check(sign(t, cert, w.a.signer)); err != nil {
		t.Errorf("ingress machine's certificate record: %v", err)
	}
	if err := v.Check(sign(t, cert, w.b.signer)); !errors.Is(err, ErrNotIngress) {
		t.Errorf("certificate record of a machine without the role: %v, want %v", err, ErrNotIngress)
	}
	// Removed, its blobs written with the role stay visible where kept, so
	// the remaining ingress sees what it could open and re-issues.
	kept := sign(t, cert, w.a.signer)
	w.remove(t, w.b, w.a, kept.Digest(), crdt.SignatureDigest(w.b.rec.Membership.Sig))
	v = w.verifier(t)
	if err := v.Check(kept); err != nil {
		t.Errorf("a removed ingress machine's kept certificate record: %v", err)
	}
	if err := v.Check(sign(t, &record.Cert{Name: "certificates/x/other"}, w.a.signer)); err == nil {
		t.Error("a removed ingress machine's new certificate record was believed")
	}
}

// TestServiceAndHistoryWriters: any member writes services and their
// histories; a non-member cannot, and a removed machine's history counts
// only where its removal kept it.
func TestServiceAndHistoryWriters(t *testing.T) {
	x := newMachine(t, "x", 9) // never admitted
	admit(t, x, x, time.Now())
	spec := []byte(`{"service":"web","image":"nginx:1"}`)
	for _, tc := range []struct {
		name string
		rec  record.Record
	}{
		{"service", &record.Service{Name: "web", Spec: spec}},
		{"history", &record.History{Service: "web", Versions: []record.Version{{N: 1, Image: "nginx:1", Spec: spec}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			v := w.verifier(t)
			for _, m := range []*machine{w.a, w.b, w.c} {
				if err := v.Check(sign(t, tc.rec, m.signer)); err != nil {
					t.Errorf("%s written by member %s: %v", tc.name, m.id, err)
				}
			}
			if err := v.Check(sign(t, tc.rec, x.signer)); !errors.Is(err, ErrNotMember) {
				t.Errorf("%s written by a non-member: %v, want %v", tc.name, err, ErrNotMember)
			}
			kept := sign(t, tc.rec, w.c.signer)
			w.remove(t, w.b, w.c, kept.Digest())
			v = w.verifier(t)
			if err := v.Check(kept); err != nil {
				t.Errorf("a removed machine's kept %s: %v", tc.name, err)
			}
			other := tc.rec
			if h, ok := other.(*record.History); ok {
				cp := *h
				cp.Versions = append([]record.Version{{N: 2, Image: "evil:1", Spec: spec}}, h.Versions...)
				other = &cp
			} else {
				other = &record.Service{Name: "web", Spec: []byte(`{"service":"web","image":"evil:1"}`)}
			}
			if err := v.Check(sign(t, other, w.c.signer)); !errors.Is(err, ErrNotMember) {
				t.Errorf("a removed machine's new %s: %v, want %v", tc.name, err, ErrNotMember)
			}
		})
	}
}
