package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/trust"
)

const network = "bench-trust"

// machine is one member: its identity key, its signer and its record
// (membership included), as the agent would hold them.
type machine struct {
	id     string
	pub    ed25519.PublicKey
	signer *trust.Signer
	rec    *record.Machine
}

// world is a network of n members: the first is the root and admits
// itself and all the others (as `uncloud init` and joins through it do).
type world struct {
	machines []*machine
	byID     map[string]*machine
	signed   []crdt.Signed // every member's machine record, signed by itself
}

func (w *world) root() ed25519.PublicKey { return w.machines[0].pub }

func newWorld(n int) (*world, error) {
	w := &world{byID: map[string]*machine{}}
	t0 := time.Now().Add(-time.Hour)
	for i := range n {
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		wg := make([]byte, 32)
		rand.Read(wg)
		id := fmt.Sprintf("m%02d", i+1)
		m := &machine{id: id, pub: pub, signer: trust.NewSigner(id, key), rec: &record.Machine{
			ID: id, Name: id, Subnet: meshaddr.Subnet(i + 1).String(),
			IdentityKey: trust.EncodeKey(pub), WireGuardKey: trust.EncodeKey(ed25519.PublicKey(wg)),
			Endpoints: []string{fmt.Sprintf("192.0.2.%d:51820", i+1)},
		}}
		issuer := m
		if i > 0 {
			issuer = w.machines[0]
		}
		ms, err := issuer.signer.Issue(record.Membership{Network: network, ID: id, IdentityKey: m.rec.IdentityKey,
			WireGuardKey: m.rec.WireGuardKey, Subnet: m.rec.Subnet}, t0.Add(time.Duration(i)*time.Second))
		if err != nil {
			return nil, err
		}
		m.rec.Membership = ms
		w.machines = append(w.machines, m)
		w.byID[id] = m
		s, _, err := signRecord(m.rec, m.signer)
		if err != nil {
			return nil, err
		}
		w.signed = append(w.signed, s)
	}
	return w, nil
}

// verifier is a fresh Verifier (empty signature cache) that knows w's
// members, with nothing remembered on disk.
func (w *world) verifier() (*trust.Verifier, error) {
	v, err := trust.NewVerifier(trust.Config{Network: network, Root: w.root(), Log: quietLog})
	if err != nil {
		return nil, err
	}
	v.Reset(w.signed, nil)
	for _, m := range w.machines {
		if !v.Member(m.id) {
			return nil, fmt.Errorf("machine %s is not a member after Reset", m.id)
		}
	}
	return v, nil
}

// signRecord is r as stored when signer writes it, and decoded back (what
// a reader hands the Verifier).
func signRecord(r record.Record, signer crdt.Signer) (crdt.Signed, []byte, error) {
	raw, err := crdt.EncodeSigned(r, signer)
	if err != nil {
		return crdt.Signed{}, nil, err
	}
	s, err := crdt.DecodeSigned(r.Key(), raw)
	if err != nil {
		return crdt.Signed{}, nil, err
	}
	return s, raw, nil
}

// sample is one record of the mix, in every form the benchmark needs.
type sample struct {
	key    string
	raw    []byte // stored form, signed
	signed crdt.Signed
	pub    ed25519.PublicKey // the signer's identity key
}

// mix builds n signed records, every one with a distinct signature, in
// the proportions of a busy network's state: of each 20, 16 containers
// (written by the machine they run on), 3 services (any member) and one
// machine record (its own machine, a new endpoint each time; a machine
// re-writes its record when its endpoints or roles change).
func (w *world) mix(n int) ([]sample, map[record.Kind]int, error) {
	out := make([]sample, 0, n)
	kinds := map[record.Kind]int{}
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		m := w.machines[i%len(w.machines)]
		var r record.Record
		switch i % 20 {
		case 0:
			rec := *m.rec
			rec.Endpoints = []string{fmt.Sprintf("198.51.100.%d:%d", i%250+1, 1024+i%60000)}
			r = &rec
		case 7, 13, 19:
			r = &record.Service{Name: fmt.Sprintf("svc-%05d", i), Mode: "replicated",
				Ports: []string{fmt.Sprintf("app%d.example.com:8080/https", i)},
				Spec:  []byte(`{"image":"ghcr.io/example/app:1.4.2","env":{"MODE":"production"},"restart":"unless-stopped"}`)}
		default:
			sub, _ := meshaddr.ParseSubnet(m.rec.Subnet)
			r = &record.Container{MachineID: m.id, ID: fmt.Sprintf("%064x", i), Name: fmt.Sprintf("web-%05d", i),
				Service: "web", Image: "nginx:1.27", Address: sub.ContainerAddr(uint8(2 + i%250)).String(),
				State: "running", Ports: []record.ContainerPort{{Port: 80, Protocol: "tcp", Name: "http"}},
				Created: created.Add(time.Duration(i) * time.Second)}
		}
		s, raw, err := signRecord(r, m.signer)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, sample{key: r.Key(), raw: raw, signed: s, pub: m.pub})
		kinds[r.Kind()]++
	}
	return out, kinds, nil
}

// containers builds n container records spread over the members, each
// signed by the machine it runs on.
func (w *world) containers(n int) ([]sample, error) {
	out := make([]sample, 0, n)
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		m := w.machines[i%len(w.machines)]
		sub, _ := meshaddr.ParseSubnet(m.rec.Subnet)
		r := &record.Container{MachineID: m.id, ID: fmt.Sprintf("%064x", i), Name: fmt.Sprintf("web-%05d", i),
			Service: "web", Image: "nginx:1.27", Address: sub.ContainerAddr(uint8(2 + i%250)).String(),
			State: "running", Ports: []record.ContainerPort{{Port: 80, Protocol: "tcp", Name: "http"}},
			Created: created.Add(time.Duration(i) * time.Second)}
		s, raw, err := signRecord(r, m.signer)
		if err != nil {
			return nil, err
		}
		out = append(out, sample{key: r.Key(), raw: raw, signed: s, pub: m.pub})
	}
	return out, nil
}

// unsignedForms re-encodes each sample's record without a signature: the
// stored form before signatures.
func unsignedForms(samples []sample) ([]sample, error) {
	out := make([]sample, len(samples))
	for i, s := range samples {
		raw, err := crdt.EncodeSigned(s.signed.Record, nil)
		if err != nil {
			return nil, err
		}
		out[i] = sample{key: s.key, raw: raw}
	}
	return out, nil
}
