// Package sealing owns the machine sealing keys and the sealed-blob
// format: a blob encrypted once with a random data key, that data key
// wrapped for each of a chosen set of machines (X25519 ECDH, HKDF-SHA256,
// AES-256-GCM). Only the listed machines can open it, so a machine that
// later leaves the set, or the network, cannot read what is sealed after.
//
// Each machine's sealing key pair is derived from its identity seed, so
// nothing new is stored; the public half is published in its machine
// record (record.Machine.SealKey).
//
// A blob also names the machines that were ever able to open its content
// (Exposed): a re-wrap for a new set keeps that history, so a reader can
// tell that a secret was readable by a machine since removed and must be
// replaced, not merely re-wrapped.
package sealing

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Version is the first byte of a sealed blob.
const Version = 2

// Bounds on what a blob may declare: everything here comes from the
// replicated state, which any member can write to.
const (
	MaxRecipients = 64
	MaxExposed    = 256
	maxHeader     = 32 << 10
	maxID         = 128
)

// ErrNotRecipient: the blob is not wrapped for this machine (it was never
// in the set, or was removed from it).
var ErrNotRecipient = errors.New("sealed blob is not wrapped for this machine")

// KeyFromSeed derives a machine's X25519 sealing key from its identity
// seed (membership.MachineState.IdentitySeed). The derivation is
// domain-separated from the Ed25519 identity key that uses the same seed.
func KeyFromSeed(seed []byte) (*ecdh.PrivateKey, error) {
	if len(seed) < 32 {
		return nil, fmt.Errorf("sealing key: identity seed is %d bytes, want at least 32", len(seed))
	}
	k, err := hkdf.Key(sha256.New, seed, nil, "uncloud machine sealing key v1", 32)
	if err != nil {
		return nil, fmt.Errorf("sealing key: derive: %w", err)
	}
	return ecdh.X25519().NewPrivateKey(k)
}

// PublicFromSeed is the published (base64) form of KeyFromSeed's public half.
func PublicFromSeed(seed []byte) (string, error) {
	k, err := KeyFromSeed(seed)
	if err != nil {
		return "", err
	}
	return EncodePublic(k.PublicKey()), nil
}

// EncodePublic is the form of a public sealing key in machine records.
func EncodePublic(k *ecdh.PublicKey) string { return base64.StdEncoding.EncodeToString(k.Bytes()) }

// ParsePublic reads a public sealing key from a machine record.
func ParsePublic(s string) (*ecdh.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("sealing public key %q: %w", s, err)
	}
	k, err := ecdh.X25519().NewPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("sealing public key %q: %w", s, err)
	}
	return k, nil
}

// Recipient is a machine a blob is sealed for.
type Recipient struct {
	ID  string
	Key *ecdh.PublicKey
}

// Header is the clear part of a blob: who can open it and who ever could.
type Header struct {
	Ephemeral  []byte    `json:"e"`
	Recipients []wrapped `json:"r"`
	// Exposed are the machines that could open this content at some
	// point (a superset of the recipients).
	Exposed []string `json:"x"`
}

type wrapped struct {
	ID  string `json:"id"`
	Key []byte `json:"k"` // the data key, AES-256-GCM sealed
}

// RecipientIDs lists the machines the blob is wrapped for now.
func (h Header) RecipientIDs() []string {
	out := make([]string, len(h.Recipients))
	for i, r := range h.Recipients {
		out[i] = r.ID
	}
	return out
}

// Seal encrypts plain for recipients. aad (e.g. the storage key) is
// authenticated, so a blob cannot be moved to another name. exposed is
// added to the recipients to form the blob's exposure history (nil for
// new content).
func Seal(plain, aad []byte, recipients []Recipient, exposed []string) ([]byte, error) {
	if len(recipients) == 0 {
		return nil, errors.New("seal: no recipients")
	}
	if len(recipients) > MaxRecipients {
		return nil, fmt.Errorf("seal: %d recipients, at most %d", len(recipients), MaxRecipients)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("seal: ephemeral key: %w", err)
	}
	dataKey := make([]byte, 32)
	rand.Read(dataKey)
	h := Header{Ephemeral: eph.PublicKey().Bytes()}
	x := slices.Clone(exposed)
	for _, r := range recipients {
		if r.ID == "" || len(r.ID) > maxID || r.Key == nil {
			return nil, fmt.Errorf("seal: bad recipient %q", r.ID)
		}
		if slices.ContainsFunc(h.Recipients, func(w wrapped) bool { return w.ID == r.ID }) {
			continue
		}
		kek, err := wrapKey(eph, r.Key, r.ID)
		if err != nil {
			return nil, err
		}
		h.Recipients = append(h.Recipients, wrapped{ID: r.ID, Key: kek.Seal(nil, make([]byte, kek.NonceSize()), dataKey, aad)})
		x = append(x, r.ID)
	}
	slices.Sort(x)
	h.Exposed = slices.Compact(x)
	if len(h.Exposed) > MaxExposed {
		return nil, fmt.Errorf("seal: exposure history of %d machines, at most %d", len(h.Exposed), MaxExposed)
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	if len(hb) > maxHeader {
		return nil, fmt.Errorf("seal: header of %d bytes, at most %d", len(hb), maxHeader)
	}
	aead, err := gcm(dataKey)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 3, 3+len(hb)+aead.NonceSize()+len(plain)+aead.Overhead())
	out[0] = Version
	binary.BigEndian.PutUint16(out[1:3], uint16(len(hb)))
	out = append(out, hb...)
	prefix := len(out)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, dataAAD(out[:prefix], aad)), nil
}

// dataAAD binds the content to its header (recipients and exposure
// history cannot be edited without the data key) and to aad.
func dataAAD(prefix, aad []byte) []byte {
	out := make([]byte, 0, len(prefix)+len(aad))
	return append(append(out, prefix...), aad...)
}

// ParseHeader reads who a blob is for, without opening it. The header is
// authenticated only when the blob is opened.
func ParseHeader(sealed []byte) (Header, error) {
	h, _, err := parse(sealed)
	return h, err
}

func parse(sealed []byte) (Header, int, error) {
	var h Header
	if len(sealed) < 3 || sealed[0] != Version {
		return h, 0, errors.New("sealed blob: not version 2")
	}
	n := int(binary.BigEndian.Uint16(sealed[1:3]))
	if n > maxHeader || len(sealed) < 3+n {
		return h, 0, fmt.Errorf("sealed blob: header of %d bytes in a %d-byte blob", n, len(sealed))
	}
	if err := json.Unmarshal(sealed[3:3+n], &h); err != nil {
		return h, 0, fmt.Errorf("sealed blob: header: %w", err)
	}
	if len(h.Ephemeral) != 32 || len(h.Recipients) > MaxRecipients || len(h.Exposed) > MaxExposed {
		return h, 0, errors.New("sealed blob: header out of bounds")
	}
	return h, 3 + n, nil
}

// Open decrypts a blob as machine id with its sealing key, and returns
// its header too (authenticated now).
func Open(sealed, aad []byte, id string, key *ecdh.PrivateKey) ([]byte, Header, error) {
	h, end, err := parse(sealed)
	if err != nil {
		return nil, h, err
	}
	i := slices.IndexFunc(h.Recipients, func(w wrapped) bool { return w.ID == id })
	if i < 0 {
		return nil, h, ErrNotRecipient
	}
	ephPub, err := ecdh.X25519().NewPublicKey(h.Ephemeral)
	if err != nil {
		return nil, h, fmt.Errorf("sealed blob: ephemeral key: %w", err)
	}
	kek, err := unwrapKey(key, ephPub, id)
	if err != nil {
		return nil, h, err
	}
	dataKey, err := kek.Open(nil, make([]byte, kek.NonceSize()), h.Recipients[i].Key, aad)
	if err != nil {
		return nil, h, fmt.Errorf("sealed blob: data key does not open with %s's sealing key: %w", id, err)
	}
	aead, err := gcm(dataKey)
	if err != nil {
		return nil, h, err
	}
	body := sealed[end:]
	if len(body) < aead.NonceSize()+aead.Overhead() {
		return nil, h, fmt.Errorf("sealed blob: body of %d bytes", len(body))
	}
	plain, err := aead.Open(nil, body[:aead.NonceSize()], body[aead.NonceSize():], dataAAD(sealed[:end], aad))
	if err != nil {
		return nil, h, fmt.Errorf("sealed blob: content: %w", err)
	}
	return plain, h, nil
}

// wrapKey and unwrapKey derive the same key-encryption key on both ends:
// HKDF over the X25519 secret, salted with both public keys, bound to the
// recipient's ID. The ephemeral key is fresh per blob, so each such key
// encrypts exactly one data key and a fixed nonce is safe.
func wrapKey(eph *ecdh.PrivateKey, to *ecdh.PublicKey, id string) (cipher.AEAD, error) {
	shared, err := eph.ECDH(to)
	if err != nil {
		return nil, fmt.Errorf("seal for %s: %w", id, err)
	}
	return kek(shared, eph.PublicKey().Bytes(), to.Bytes(), id)
}

func unwrapKey(key *ecdh.PrivateKey, eph *ecdh.PublicKey, id string) (cipher.AEAD, error) {
	shared, err := key.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("open as %s: %w", id, err)
	}
	return kek(shared, eph.Bytes(), key.PublicKey().Bytes(), id)
}

func kek(shared, ephPub, recipientPub []byte, id string) (cipher.AEAD, error) {
	salt := append(slices.Clone(ephPub), recipientPub...)
	k, err := hkdf.Key(sha256.New, shared, salt, "uncloud seal v2 wrap "+id, 32)
	if err != nil {
		return nil, err
	}
	return gcm(k)
}

func gcm(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
