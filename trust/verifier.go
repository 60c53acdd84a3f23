package trust

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/uncloud-mesh/uncloud/internal/atomicfile"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
)

// Errors of Check; all are refusals (the store wraps them in
// crdt.ErrUnverified).
var (
	ErrUnsigned    = errors.New("record is not signed")
	ErrWrongSigner = errors.New("record signed by a machine that may not write it")
	ErrBadSig      = errors.New("record signature does not verify")
	ErrNotMember   = errors.New("signer is not a member of this network")
	ErrNotIngress  = errors.New("certificate storage signed by a machine without the ingress role")
	// ErrUnknownKind: every kind is said here, so a new one is refused
	// until someone decides who may write it.
	ErrUnknownKind = errors.New("record kind without a writer rule")
)

// IngressRole is the role whose machines keep certificate storage.
const IngressRole = "ingress"

// Config is what a Verifier needs to know about its network.
type Config struct {
	// Network is the network ID; memberships for others are refused.
	Network string
	// Root is the network's root key: the first machine's identity key,
	// which alone may sign its own membership.
	Root ed25519.PublicKey
	// Dir keeps the revocations seen, so a revocation deleted from the
	// state (deletions are not signed) still counts here, across restarts.
	// Empty keeps them in memory only.
	Dir string
	Log *slog.Logger
}

// trustFileName holds the remembered revocations, as signed, and the
// subnet owners last believed.
const trustFileName = "trust.json"

// maxRemembered bounds the revocations kept from the state: more than a
// network of 254 machines can ever legitimately write.
const maxRemembered = 4096

// sigCacheSize bounds the cache of verified signatures.
const sigCacheSize = 1 << 16

// Verifier is the store's crdt.Verifier (see the package doc).
type Verifier struct {
	cfg Config
	log *slog.Logger

	view atomic.Pointer[view]

	mu         sync.Mutex // Reset, remembered, owners
	remembered map[string]crdt.Signed
	owners     map[string]string // subnet -> member ID, as last believed

	cacheMu sync.Mutex
	cache   map[[32]byte]bool // sha256(signer key, msg, sig) of signatures that verified

	refusedMu sync.Mutex
	refused   map[string]uint64 // Check refusals by reason
	logged    map[string]bool   // key+digest refusals already logged (bounded)
}

// NewVerifier loads the remembered revocations from cfg.Dir.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if len(cfg.Root) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("trust: network %s has no root key", cfg.Network)
	}
	v := &Verifier{cfg: cfg, log: cfg.Log.With("component", "trust"), remembered: map[string]crdt.Signed{}, owners: map[string]string{},
		cache: map[[32]byte]bool{}, refused: map[string]uint64{}, logged: map[string]bool{}}
	if err := v.load(); err != nil {
		return nil, err
	}
	v.view.Store(build(cfg.Network, cfg.Root, nil, v.rememberedList(), v.owners))
	return v, nil
}

// Reset implements crdt.Verifier.
func (v *Verifier) Reset(machines, revoked []crdt.Signed) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	all := v.rememberedList()
	for _, s := range revoked {
		if _, ok := v.remembered[s.Key+"#"+s.Digest()]; !ok {
			all = append(all, s)
		}
	}
	nv := build(v.cfg.Network, v.cfg.Root, machines, all, v.owners)
	// Remember what verified (garbage must not fill the file), for good.
	added := false
	for _, s := range revoked {
		k := s.Key + "#" + s.Digest()
		if _, ok := v.remembered[k]; !ok && nv.revocations[k] != nil && len(v.remembered) < maxRemembered {
			v.remembered[k] = s
			added = true
		}
	}
	owners := map[string]string{}
	for id, m := range nv.members {
		owners[m.rec.Subnet] = id
	}
	if !maps.Equal(owners, v.owners) {
		v.owners = owners
		added = true
	}
	if added {
		if err := v.save(); err != nil {
			v.log.Warn("remember revocations", "err", err)
		}
	}
	old := v.view.Swap(nv)
	return old == nil || old.fingerprint != nv.fingerprint
}

// Check implements crdt.Verifier.
func (v *Verifier) Check(s crdt.Signed) error {
	err := v.check(s)
	if err != nil {
		v.refusedMu.Lock()
		v.refused[errors.Unwrap(err).Error()]++
		if k := s.Key + "#" + s.Digest(); !v.logged[k] && len(v.logged) < 10_000 {
			v.logged[k] = true
			// A newcomer reads records before the memberships that
			// vouch for their signers (a join logged some forty of
			// these, all accepted a moment later): not a member yet
			// is the ordinary state of a join, so it is a debug line;
			// the refused counters (status, metrics) still count it.
			level := slog.LevelWarn
			if errors.Is(err, ErrNotMember) {
				level = slog.LevelDebug
			}
			v.log.Log(context.Background(), level, "record ignored", "key", s.Key, "by", s.By, "err", err)
		}
		v.refusedMu.Unlock()
	}
	return err
}

func (v *Verifier) check(s crdt.Signed) error {
	if s.By == "" || len(s.Sig) == 0 {
		return fmt.Errorf("%s: %w", s.Key, ErrUnsigned)
	}
	vw := v.view.Load()
	switch r := s.Record.(type) {
	case *record.Machine:
		m := vw.members[r.ID]
		if s.By != r.ID || m == nil || r.Membership == nil || crdt.SignatureDigest(r.Membership.Sig) != m.digest {
			return fmt.Errorf("machine %s: %w", r.ID, ErrNotMember)
		}
		return v.verify(m.identity, s)
	case *record.Container:
		return v.owned(vw, s, r.MachineID)
	case *record.Token:
		return v.owned(vw, s, r.Issuer)
	case *record.Revoked:
		if vw.effectiveKeys[s.Key+"#"+s.Digest()] {
			return nil // verified and judged when the view was built
		}
		// Not in the view yet (about to be written, or carried with a
		// key push): its signer must be a member now.
		if s.By != r.By {
			return fmt.Errorf("revocation of %s: %w", r.MachineID, ErrWrongSigner)
		}
		return v.byMember(vw, s, false)
	case *record.Cert:
		// Only the ingress reads certificate storage, so only the ingress
		// writes it: another member could otherwise plant an account key
		// of its choosing or overwrite what it cannot read.
		// A removed ingress machine's blobs stay readable where its removal
		// kept them (written while it had the role): the ingress must see
		// what that machine could open, to re-issue it.
		if m := vw.members[s.By]; m != nil && !slices.Contains(m.rec.Roles, IngressRole) {
			return fmt.Errorf("%s signed by %s: %w", s.Key, s.By, ErrNotIngress)
		}
		return v.byMember(vw, s, true)
	case *record.Service, *record.History:
		// Any member runs and deploys services, and records what it
		// deployed; a removed machine's are believed where its removal
		// kept them.
		return v.byMember(vw, s, true)
	case *record.Secret:
		// Any member runs deploys, so any member writes secrets and
		// configs (sealed for the members), and re-wraps them when the
		// members change; a non-member's or a removed machine's later
		// write is refused like a service's.
		return v.byMember(vw, s, true)
	default:
		return fmt.Errorf("%s: %w", s.Key, ErrUnknownKind)
	}
}

// owned accepts a record only from the machine it belongs to, while that
// machine is a member.
func (v *Verifier) owned(vw *view, s crdt.Signed, owner string) error {
	if s.By != owner {
		return fmt.Errorf("%s belongs to %s, signed by %s: %w", s.Key, owner, s.By, ErrWrongSigner)
	}
	return v.byMember(vw, s, false)
}

// byMember accepts a record signed by a member, or, when keptOK, by a
// removed machine whose removal kept this very signature.
func (v *Verifier) byMember(vw *view, s crdt.Signed, keptOK bool) error {
	if m := vw.members[s.By]; m != nil {
		return v.verify(m.identity, s)
	}
	if rv := vw.revoked[s.By]; rv != nil && keptOK && rv.kept[s.Digest()] {
		if key := vw.identities[s.By]; key != nil {
			return v.verify(key, s)
		}
	}
	return fmt.Errorf("%s signed by %s: %w", s.Key, s.By, ErrNotMember)
}

// verify checks the signature, once per distinct (key, message, signature).
func (v *Verifier) verify(key ed25519.PublicKey, s crdt.Signed) error {
	h := sha256.New()
	h.Write(key)
	h.Write(s.Msg)
	h.Write(s.Sig)
	var id [32]byte
	h.Sum(id[:0])
	v.cacheMu.Lock()
	ok := v.cache[id]
	v.cacheMu.Unlock()
	if ok {
		return nil
	}
	if !ed25519.Verify(key, s.Msg, s.Sig) {
		return fmt.Errorf("%s signed by %s: %w", s.Key, s.By, ErrBadSig)
	}
	v.cacheMu.Lock()
	if len(v.cache) >= sigCacheSize {
		clear(v.cache) // simple and bounded; a refill costs one verify per record
	}
	v.cache[id] = true
	v.cacheMu.Unlock()
	return nil
}

// Refused counts the records Check refused, by reason.
func (v *Verifier) Refused() map[string]uint64 {
	v.refusedMu.Lock()
	defer v.refusedMu.Unlock()
	out := make(map[string]uint64, len(v.refused))
	for k, n := range v.refused {
		out[k] = n
	}
	for k, n := range v.view.Load().refused {
		out[k] += uint64(n)
	}
	return out
}

// Member says whether id is a member now.
func (v *Verifier) Member(id string) bool { return v.view.Load().members[id] != nil }

// IsRevoked says whether id, or a machine with this identity or WireGuard
// key, has been removed.
func (v *Verifier) IsRevoked(idOrKey string) bool {
	vw := v.view.Load()
	return vw.revoked[idOrKey] != nil || vw.revokedKeys[idOrKey]
}

func (v *Verifier) rememberedList() []crdt.Signed {
	keys := make([]string, 0, len(v.remembered))
	for k := range v.remembered {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]crdt.Signed, 0, len(keys))
	for _, k := range keys {
		out = append(out, v.remembered[k])
	}
	return out
}

// trustFile is what a Verifier keeps in its Dir.
type trustFile struct {
	Revocations []storedRevocation `json:"revocations"`
	Owners      map[string]string  `json:"subnet_owners,omitempty"`
}

// storedRevocation is a remembered revocation as it was signed; the
// record is decoded again from the signed message on load.
type storedRevocation struct {
	Key string `json:"key"`
	By  string `json:"by"`
	Sig []byte `json:"sig"`
	Msg []byte `json:"msg"`
}

func (v *Verifier) load() error {
	if v.cfg.Dir == "" {
		return nil
	}
	path := filepath.Join(v.cfg.Dir, trustFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var stored trustFile
	if err := json.Unmarshal(b, &stored); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	if stored.Owners != nil {
		v.owners = stored.Owners
	}
	for _, sr := range stored.Revocations {
		s, err := crdt.SignedFromMessage(sr.Key, sr.By, sr.Sig, sr.Msg)
		if err != nil {
			v.log.Warn("remembered revocation unreadable", "key", sr.Key, "err", err)
			continue
		}
		v.remembered[sr.Key+"#"+s.Digest()] = s
	}
	return nil
}

func (v *Verifier) save() error {
	if v.cfg.Dir == "" {
		return nil
	}
	out := trustFile{Owners: v.owners}
	for _, s := range v.rememberedList() {
		out.Revocations = append(out.Revocations, storedRevocation{Key: s.Key, By: s.By, Sig: s.Sig, Msg: s.Msg})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(v.cfg.Dir, trustFileName), b, 0o600)
}
