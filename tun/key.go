package tun

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// KeyLen is the length of a Curve25519 key as WireGuard uses it.
const KeyLen = 32

// Key is a WireGuard private or public key. Its text form is standard base64,
// the form wg(8) and wg-quick use, so keys can be pasted between tools.
type Key [KeyLen]byte

// GeneratePrivateKey returns a new, clamped Curve25519 private key.
func GeneratePrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("generate private key: %w", err)
	}
	// Clamping as in RFC 7748, so the key is the same one wg(8) would use.
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// PublicKey derives the public half of a private key.
func (k Key) PublicKey() Key {
	var pub Key
	curve25519.ScalarBaseMult((*[32]byte)(&pub), (*[32]byte)(&k))
	return pub
}

// IsZero reports whether k is the all-zero key, which is never valid.
func (k Key) IsZero() bool { return k == Key{} }

// String returns the base64 form. Never log a private key with it.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// hexString is the form wireguard-go's UAPI expects.
func (k Key) hexString() string { return hex.EncodeToString(k[:]) }

// ParseKey parses the base64 form of a key.
func ParseKey(s string) (Key, error) {
	s = strings.TrimSpace(s)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return Key{}, fmt.Errorf("key %q is not base64: %w", abbreviate(s), err)
	}
	if len(b) != KeyLen {
		return Key{}, fmt.Errorf("key %q decodes to %d bytes, want %d", abbreviate(s), len(b), KeyLen)
	}
	var k Key
	copy(k[:], b)
	if k.IsZero() {
		return Key{}, fmt.Errorf("key is all zeros")
	}
	return k, nil
}

// MarshalText and UnmarshalText let keys sit in JSON records as base64.
// The zero key is the empty string, so a missing key reads back as
// missing and the caller's validation names it, instead of the whole
// document failing to decode.
func (k Key) MarshalText() ([]byte, error) {
	if k.IsZero() {
		return []byte{}, nil
	}
	return []byte(k.String()), nil
}

func (k *Key) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*k = Key{}
		return nil
	}
	parsed, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = parsed
	return nil
}

// abbreviate keeps error messages from echoing a whole (possibly secret) key.
func abbreviate(s string) string {
	if len(s) > 8 {
		return s[:4] + "…"
	}
	return s
}
