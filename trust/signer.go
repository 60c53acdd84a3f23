package trust

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
)

// Signer signs this machine's records and the memberships it issues with
// its identity key (crdt.Signer).
type Signer struct {
	id  string
	key ed25519.PrivateKey
}

// NewSigner signs as machine id with key.
func NewSigner(id string, key ed25519.PrivateKey) *Signer { return &Signer{id: id, key: key} }

// SignerID implements crdt.Signer.
func (s *Signer) SignerID() string { return s.id }

// Sign implements crdt.Signer.
func (s *Signer) Sign(msg []byte) []byte { return ed25519.Sign(s.key, msg) }

// Issue signs a membership for a machine this one admits (or, for the
// network's first machine, for itself): m's subject fields must be set.
func (s *Signer) Issue(m record.Membership, at time.Time) (*record.Membership, error) {
	m.Issuer, m.At, m.Sig = s.id, at.UTC(), []byte{0}
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("issue membership: %w", err)
	}
	m.Sig = ed25519.Sign(s.key, m.Message())
	return &m, nil
}

// EncodeKey is the text form of a public key in records (as api.EncodeKey).
func EncodeKey(pub ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(pub) }

// DecodeKey parses EncodeKey's form.
func DecodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("identity key %q is not base64: %w", s, err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("identity key is %d bytes, want %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}
