package crdt

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/uncloud-mesh/uncloud/record"
)

// Signatures. With a Signer, every record this replica writes carries the
// writer's machine ID and its signature over the stored bytes; with a
// Verifier, every record read through Get, List or Watch is checked first,
// and one that fails is treated as absent (and counted). The store knows
// nothing of who may sign what: the Verifier does (package trust), from
// the machine and revocation records, which the store hands it raw
// whenever they change. Deletions carry no signature (go-ds-crdt's
// tombstones have no value); owners re-publish what others delete.

// Signer signs this replica's writes.
type Signer interface {
	// SignerID is the machine ID written next to each signature.
	SignerID() string
	Sign(msg []byte) []byte
}

// Signed is one stored record with what its writer signed.
type Signed struct {
	Key    string
	Record Record
	By     string // the signer's machine ID; empty when unsigned
	Sig    []byte
	Msg    []byte // the signed bytes (SignedMessage of the envelope)
}

// Digest names the signature, for revocations that keep a removed
// machine's earlier signatures (record.Revoked.Kept).
func (s Signed) Digest() string { return SignatureDigest(s.Sig) }

// SignatureDigest is a short, stable name for a signature.
func SignatureDigest(sig []byte) string {
	sum := sha256.Sum256(sig)
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// Verifier decides which records may be used.
type Verifier interface {
	// Reset gives the verifier every machine and revocation record as
	// stored, signatures unchecked, and returns whether anything that
	// Check decides on changed.
	Reset(machines, revoked []Signed) bool
	// Check says whether the record may be used, and why not.
	Check(s Signed) error
}

// SignedMessage is what a writer signs: the key, the kind, the encoding
// version and the record's stored JSON, under a domain prefix. The key is
// in it, so a signed record cannot be replayed under another key.
func SignedMessage(key string, kind record.Kind, v int, data []byte) []byte {
	var b strings.Builder
	b.Grow(len(key) + len(kind) + len(data) + 32)
	b.WriteString("uncloud record v1\x00")
	b.WriteString(key)
	b.WriteByte(0)
	b.WriteString(string(kind))
	b.WriteByte(0)
	b.WriteString(strconv.Itoa(v))
	b.WriteByte(0)
	b.Write(data)
	return []byte(b.String())
}

// trustGate is the store's use of its Verifier: it keeps the verifier's
// view current and filters decoded records through it.
type trustGate struct {
	v  Verifier
	mu sync.Mutex // serializes Reset
}

// refresh re-reads the machine and revocation records and hands them to
// the verifier; it returns whether the verifier's view changed.
func (s *Store) refreshTrust(ctx context.Context) bool {
	g := s.trust
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	machines := s.rawSigned(ctx, record.MachinesPrefix)
	revoked := s.rawSigned(ctx, record.RevokedPrefix)
	return g.v.Reset(machines, revoked)
}

// rawSigned decodes every record under prefix without checking it.
func (s *Store) rawSigned(ctx context.Context, prefix string) []Signed {
	entries, err := s.queryRaw(ctx, queryPrefix(prefix))
	if err != nil {
		s.log.Warn("read records for the trust view", "prefix", prefix, "err", err)
		return nil
	}
	out := make([]Signed, 0, len(entries))
	for _, e := range entries {
		if !strings.HasPrefix(e.Key, prefix) {
			continue
		}
		sr, err := decodeSigned(e.Key, e.Value)
		if err != nil {
			continue
		}
		out = append(out, sr)
	}
	return out
}

// accept decodes a stored value and checks it; a record that fails the
// check comes back as an error wrapping ErrUnverified.
func (s *Store) accept(key string, raw []byte) (Record, error) {
	sr, err := decodeSigned(key, raw)
	if err != nil {
		return nil, err
	}
	if s.trust == nil {
		return sr.Record, nil
	}
	if err := s.trust.v.Check(sr); err != nil {
		s.st.unverified.Add(1)
		return nil, fmt.Errorf("%w: %s: %w", ErrUnverified, key, err)
	}
	return sr.Record, nil
}

// SignedBy lists the digests of the signatures by machineID on records
// under the prefixes that this replica holds and believes: part of what a
// revocation of that machine keeps (record.Revoked.Kept).
func (s *Store) SignedBy(ctx context.Context, machineID string, prefixes ...string) ([]string, error) {
	var out []string
	for _, p := range prefixes {
		d, err := s.signedBy(ctx, machineID, p)
		if err != nil {
			return nil, err
		}
		out = append(out, d...)
	}
	return out, nil
}

func (s *Store) signedBy(ctx context.Context, machineID, prefix string) ([]string, error) {
	all, err := s.queryRaw(ctx, queryPrefix(prefix))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range all {
		if !strings.HasPrefix(e.Key, prefix) || record.CheckKey(e.Key) != nil {
			continue
		}
		sr, err := decodeSigned(e.Key, e.Value)
		if err != nil || sr.By != machineID || len(sr.Sig) == 0 {
			continue
		}
		if s.trust != nil && s.trust.v.Check(sr) != nil {
			continue
		}
		out = append(out, sr.Digest())
	}
	return out, nil
}

// GetSigned returns the record at key as stored, with its signature,
// after checking it: the form in which a record travels outside the
// store (a revocation carried with a gossip key push).
func (s *Store) GetSigned(ctx context.Context, key string) ([]byte, error) {
	if err := record.CheckKey(key); err != nil {
		return nil, err
	}
	raw, err := s.getRaw(ctx, key)
	if err != nil {
		return nil, err
	}
	if _, err := s.accept(key, raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// PutSigned stores a record exactly as another machine signed it (see
// GetSigned), after checking it: the signature stays the original
// writer's. Revocations and machine records only refresh the trust view
// at once.
func (s *Store) PutSigned(ctx context.Context, key string, raw []byte) error {
	if err := record.CheckKey(key); err != nil {
		return err
	}
	sr, err := decodeSigned(key, raw)
	if err != nil {
		return err
	}
	if s.trust != nil {
		if err := s.trust.v.Check(sr); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrUnverified, key, err)
		}
	}
	if cur, err := s.getRaw(ctx, key); err == nil && string(cur) == string(raw) {
		return nil
	}
	if err := s.putRaw(ctx, key, raw); err != nil {
		return err
	}
	s.afterLocalWrite(ctx, key)
	return nil
}

// afterLocalWrite refreshes the trust view at once when a local write
// touched it, so the writer's next read sees its own effect.
func (s *Store) afterLocalWrite(ctx context.Context, key string) {
	if strings.HasPrefix(key, record.MachinesPrefix) || strings.HasPrefix(key, record.RevokedPrefix) {
		if s.refreshTrust(ctx) {
			s.watch.reverifyAll()
		}
	}
}

// SignedFromMessage rebuilds a Signed from a signed message kept outside
// the store (SignedMessage's form): the record is decoded from the data
// the signature covers, so the two cannot disagree.
func SignedFromMessage(key, by string, sig, msg []byte) (Signed, error) {
	parts := strings.SplitN(string(msg), "\x00", 5)
	if len(parts) != 5 || parts[0] != "uncloud record v1" || parts[1] != key {
		return Signed{}, fmt.Errorf("%w: signed message of %s is malformed", record.ErrBadRecord, key)
	}
	v, err := strconv.Atoi(parts[3])
	if err != nil {
		return Signed{}, fmt.Errorf("%w: signed message of %s has a bad version", record.ErrBadRecord, key)
	}
	raw, err := encodeEnvelope(record.Kind(parts[2]), v, []byte(parts[4]), by, sig)
	if err != nil {
		return Signed{}, err
	}
	return decodeSigned(key, raw)
}

// EncodeSigned is the stored form of r, signed by signer (nil: unsigned):
// what Put writes, for tools and tests that hand records around.
func EncodeSigned(r Record, signer Signer) ([]byte, error) { return encodeRecord(r, signer) }

// DecodeSigned decodes a stored form without checking its signature.
func DecodeSigned(key string, raw []byte) (Signed, error) { return decodeSigned(key, raw) }

// PutUnchecked stores a value as given, without signing or checking it:
// for adversarial tests that play a member gone rogue (the agent allows it
// only when told to). Readers still check it.
func (s *Store) PutUnchecked(ctx context.Context, key string, raw []byte) error {
	if err := record.CheckKey(key); err != nil {
		return err
	}
	if err := s.putRaw(ctx, key, raw); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	s.afterLocalWrite(ctx, key)
	return nil
}
