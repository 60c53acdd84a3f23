package trust

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
)

// view is what the machine and revocation records say, worked out once
// per change of them (Verifier.Reset) and read by every Check.
type view struct {
	// members are the machines believed now, by ID.
	members map[string]*member
	// identities are the identity keys of every machine that was ever
	// validly admitted, revoked ones included: their earlier signatures
	// (kept by their revocation) are checked with them.
	identities map[string]ed25519.PublicKey
	// revoked are the effective revocations, by removed machine ID.
	revoked map[string]*revocation
	// revokedKeys are the identity and WireGuard keys of removed machines.
	revokedKeys map[string]bool
	// revocations are all revocation records that verify, effective or
	// not, by key and digest; effectiveKeys are those that count. Check
	// answers for a revocation record from here.
	revocations   map[string]*revocation
	effectiveKeys map[string]bool
	// fingerprint changes whenever anything Check decides on changes.
	fingerprint string
	// refused counts the machine and revocation records left out, by reason.
	refused map[string]int
}

type member struct {
	rec      *record.Machine
	identity ed25519.PublicKey
	digest   string // of the membership signature
}

type revocation struct {
	rec    *record.Revoked
	digest string // of the record's signature
	kept   map[string]bool
}

// candidate is a machine record whose own signature and membership
// statement are well formed; whether its chain holds is decided later.
type candidate struct {
	rec      *record.Machine
	identity ed25519.PublicKey
	digest   string
}

// build works out the view. Revocations are judged before membership:
// a revocation counts when its signer was ever admitted (whatever became
// of it later) and, if that signer has itself been removed, when the
// removal kept it or it removes the signer's own remover (two sides of a
// partition that remove each other both stay removed).
//
// owners are the subnets' owners this machine believed before (subnet ->
// machine ID): in a conflict the machine that already owned a subnet
// keeps it, so a member cannot cut an existing machine off by admitting
// another into its subnet, whatever admission time it writes.
func build(network string, root ed25519.PublicKey, machines, revokedRecs []crdt.Signed, owners map[string]string) *view {
	v := &view{members: map[string]*member{}, identities: map[string]ed25519.PublicKey{},
		revoked: map[string]*revocation{}, revokedKeys: map[string]bool{}, revocations: map[string]*revocation{},
		effectiveKeys: map[string]bool{}, refused: map[string]int{}}
	cands := map[string]*candidate{}
	for _, s := range machines {
		c, reason := machineCandidate(network, s)
		if c == nil {
			v.refused[reason]++
			continue
		}
		cands[c.rec.ID] = c
	}
	// Identity keys named by revocations stand in for deleted machine
	// records, but only once the revocation's own signer is known.
	var revList []*crdt.Signed
	for i := range revokedRecs {
		s := &revokedRecs[i]
		r, ok := s.Record.(*record.Revoked)
		if !ok || s.By == "" || s.By != r.By || len(s.Sig) == 0 {
			v.refused["revocation unsigned or signed by another than its remover"]++
			continue
		}
		revList = append(revList, s)
	}
	// A removed machine's record is deleted, but the machines it admitted
	// still chain through it: its revocation carries its membership, which
	// must chain to the root on its own (a revocation cannot vouch for the
	// machine it names, or a member could invent a remover and a removed).
	removed := map[string]*candidate{}
	for _, s := range revList {
		r := s.Record.(*record.Revoked)
		ms := r.Membership
		if _, ok := cands[r.MachineID]; ok || ms == nil || ms.Check() != nil || ms.ID != r.MachineID ||
			ms.IdentityKey != r.IdentityKey || ms.WireGuardKey != r.WireGuardKey || ms.Network != network {
			continue
		}
		key, err := DecodeKey(ms.IdentityKey)
		if err != nil {
			continue
		}
		removed[r.MachineID] = &candidate{rec: &record.Machine{ID: ms.ID, IdentityKey: ms.IdentityKey,
			WireGuardKey: ms.WireGuardKey, Subnet: ms.Subnet, Membership: ms}, identity: key, digest: crdt.SignatureDigest(ms.Sig)}
	}
	ever := &chains{root: root, cands: cands, removed: removed, memo: map[string]int{}}
	for _, s := range revList {
		r := s.Record.(*record.Revoked)
		key, ok := ever.identity(r.By)
		if !ok || !ed25519.Verify(key, s.Msg, s.Sig) {
			v.refused["revocation not signed by a machine of this network"]++
			continue
		}
		rv := &revocation{rec: r, digest: s.Digest(), kept: map[string]bool{}}
		for _, d := range r.Kept {
			rv.kept[d] = true
		}
		v.revocations[s.Key+"#"+rv.digest] = rv
	}
	// A machine removed twice (two removers, or a deleted revocation that
	// this machine remembers) keeps what any effective removal kept.
	effectiveList := effective(v.revocations)
	for k, rv := range v.revocations {
		if slices.Contains(effectiveList, rv) {
			v.effectiveKeys[k] = true
		}
	}
	for _, rv := range effectiveList {
		id := rv.rec.MachineID
		if prev := v.revoked[id]; prev != nil {
			merged := &revocation{rec: prev.rec, digest: prev.digest, kept: maps.Clone(prev.kept)}
			maps.Copy(merged.kept, rv.kept)
			rv = merged
		}
		v.revoked[id] = rv
		v.revokedKeys[rv.rec.IdentityKey] = true
		v.revokedKeys[rv.rec.WireGuardKey] = true
	}
	for id := range cands {
		if key, ok := ever.identity(id); ok {
			v.identities[id] = key
		}
	}
	for id := range removed {
		if key, ok := ever.identity(id); ok {
			v.identities[id] = key
		}
	}
	// Members: a chain to the root in which every issuer either stands
	// or was removed with this admission kept; no revoked ID or key.
	ids := make([]string, 0, len(cands))
	for id := range cands {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	standing := map[string]int{}
	var stands func(id string, depth int) bool
	stands = func(id string, depth int) bool {
		if s, ok := standing[id]; ok {
			return s == 1
		}
		c := cands[id]
		if c == nil || depth > 512 {
			return false
		}
		standing[id] = 0 // a cycle does not stand
		ok := v.identities[id] != nil && v.revoked[id] == nil &&
			!v.revokedKeys[c.rec.IdentityKey] && !v.revokedKeys[c.rec.WireGuardKey]
		if ok && c.rec.Membership.Issuer != id {
			issuer := c.rec.Membership.Issuer
			if rv := v.revoked[issuer]; rv != nil {
				ok = rv.kept[c.digest]
			} else {
				ok = stands(issuer, depth+1)
			}
		}
		if ok {
			standing[id] = 1
		}
		return ok
	}
	bySubnet := map[string]*candidate{}
	for _, id := range ids {
		if !stands(id, 0) {
			v.refused["machine not admitted by a standing member, or removed"]++
			continue
		}
		c := cands[id]
		// Two members claiming one subnet: its known owner keeps it, else
		// the earlier admission.
		if o := bySubnet[c.rec.Subnet]; o != nil {
			v.refused["subnet claimed twice"]++
			switch owner := owners[c.rec.Subnet]; {
			case owner == o.rec.ID:
				continue
			case owner == c.rec.ID:
			case !o.rec.Membership.At.After(c.rec.Membership.At):
				continue
			}
			delete(v.members, o.rec.ID)
		}
		bySubnet[c.rec.Subnet] = c
		v.members[id] = &member{rec: c.rec, identity: c.identity, digest: c.digest}
	}
	v.fingerprint = v.fingerprintOf()
	return v
}

// machineCandidate checks what a machine record can prove about itself:
// it is signed by its own identity key and carries a membership for
// exactly that identity, WireGuard key and subnet in this network.
func machineCandidate(network string, s crdt.Signed) (*candidate, string) {
	m, ok := s.Record.(*record.Machine)
	switch {
	case !ok:
		return nil, "not a machine record"
	case s.By != m.ID || len(s.Sig) == 0:
		return nil, "machine record not signed by that machine"
	case m.Membership == nil || m.Membership.Check() != nil:
		return nil, "machine record without a membership"
	case m.Membership.Network != network || !m.Membership.Matches(m):
		return nil, "membership for another machine, key, subnet or network"
	}
	if _, err := meshaddr.ParseSubnet(m.Subnet); err != nil {
		return nil, "machine record with a bad subnet"
	}
	key, err := DecodeKey(m.IdentityKey)
	if err != nil {
		return nil, "machine record with a bad identity key"
	}
	if !ed25519.Verify(key, s.Msg, s.Sig) {
		return nil, "machine record signature does not verify"
	}
	return &candidate{rec: m, identity: key, digest: crdt.SignatureDigest(m.Membership.Sig)}, ""
}

// chains answers whether a machine was ever validly admitted: its
// membership verifies under its issuer's key, back to the root. Removal
// is not considered here (it is judged from these chains).
type chains struct {
	root    ed25519.PublicKey
	cands   map[string]*candidate
	removed map[string]*candidate // removed machines, from the memberships their revocations carry
	memo    map[string]int        // 1 holds, 2 fails, 3 in progress
}

func (c *chains) identity(id string) (ed25519.PublicKey, bool) {
	switch c.memo[id] {
	case 1:
		return c.candidate(id).identity, true
	case 2, 3:
		return nil, false
	}
	c.memo[id] = 3
	cd := c.candidate(id)
	if cd == nil {
		c.memo[id] = 2
		return nil, false
	}
	ms := cd.rec.Membership
	var issuerKey ed25519.PublicKey
	if ms.Issuer == id {
		if cd.identity.Equal(c.root) {
			issuerKey = c.root
		}
	} else if key, ok := c.identity(ms.Issuer); ok {
		issuerKey = key
	}
	if issuerKey == nil || !ed25519.Verify(issuerKey, ms.Message(), ms.Sig) {
		c.memo[id] = 2
		return nil, false
	}
	c.memo[id] = 1
	return cd.identity, true
}

func (c *chains) candidate(id string) *candidate {
	if cd := c.cands[id]; cd != nil {
		return cd
	}
	return c.removed[id]
}

// effective decides which verified revocations count (see build), in
// key order so that every machine decides alike.
func effective(all map[string]*revocation) []*revocation {
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	byTarget := map[string][]*revocation{}
	for _, k := range keys {
		r := all[k]
		byTarget[r.rec.MachineID] = append(byTarget[r.rec.MachineID], r)
	}
	state := map[*revocation]int{} // 1 counts, 2 void, 3 in progress (counts: fail safe)
	var counts func(r *revocation) bool
	counts = func(r *revocation) bool {
		switch state[r] {
		case 1, 3:
			return true
		case 2:
			return false
		}
		state[r] = 3
		ok := true
		for _, against := range byTarget[r.rec.By] {
			if against.rec.MachineID == r.rec.By && counts(against) &&
				!against.kept[r.digest] && r.rec.MachineID != against.rec.By {
				ok = false
				break
			}
		}
		if ok {
			state[r] = 1
		} else {
			state[r] = 2
		}
		return ok
	}
	var out []*revocation
	for _, k := range keys {
		if counts(all[k]) {
			out = append(out, all[k])
		}
	}
	return out
}

func (v *view) fingerprintOf() string {
	h := sha256.New()
	ids := make([]string, 0, len(v.members))
	for id := range v.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := v.members[id]
		h.Write([]byte("m\x00" + id + "\x00" + m.rec.IdentityKey + "\x00" + m.rec.WireGuardKey + "\x00" + m.rec.Subnet + "\x00" + m.digest + "\x00"))
		h.Write([]byte(strings.Join(m.rec.Roles, ",") + "\x00")) // roles decide who writes certificates
	}
	rids := make([]string, 0, len(v.revocations))
	for k := range v.revocations {
		rids = append(rids, k)
	}
	sort.Strings(rids)
	eff := make([]string, 0, len(v.revoked))
	for id := range v.revoked {
		eff = append(eff, id)
	}
	sort.Strings(eff)
	h.Write([]byte("effective\x00" + strings.Join(eff, "\x00") + "\x00"))
	for _, k := range rids {
		r := v.revocations[k]
		kept := make([]string, 0, len(r.kept))
		for d := range r.kept {
			kept = append(kept, d)
		}
		slices.Sort(kept)
		h.Write([]byte("r\x00" + k + "\x00" + r.digest + "\x00"))
		for _, d := range kept {
			h.Write([]byte(d + "\x00"))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
