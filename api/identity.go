package api

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/uncloud-mesh/uncloud/trust"
)

// Identity is a machine's signing key. Its public half goes into the
// machine record; peers pin it for every machine API call.
type Identity struct {
	key  ed25519.PrivateKey
	cert tls.Certificate
}

// GenerateIdentity makes a new identity key.
func GenerateIdentity() (*Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	return NewIdentity(priv.Seed())
}

// NewIdentity rebuilds an identity from its 32-byte seed, as stored in
// the data dir.
func NewIdentity(seed []byte) (*Identity, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	key := ed25519.NewKeyFromSeed(seed)
	cert, err := selfSignedCert(key)
	if err != nil {
		return nil, err
	}
	return &Identity{key: key, cert: cert}, nil
}

// Seed is the secret to store (0600) to rebuild the identity.
func (id *Identity) Seed() []byte { return id.key.Seed() }

// PrivateKey signs as this machine (records, memberships; package trust).
func (id *Identity) PrivateKey() ed25519.PrivateKey { return id.key }

// PublicKey is what other machines pin.
func (id *Identity) PublicKey() ed25519.PublicKey { return id.key.Public().(ed25519.PublicKey) }

// selfSignedCert wraps the key in a certificate only because TLS wants
// one: trust comes from pinning the key, not from the certificate, so its
// names and dates carry no meaning beyond being valid for a long time.
func selfSignedCert(key ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "uncloud machine " + EncodeKey(key.Public().(ed25519.PublicKey))},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(20, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-sign identity certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// EncodeKey is the text form of an identity public key in records
// (trust.EncodeKey: the records' format is trust's).
func EncodeKey(pub ed25519.PublicKey) string { return trust.EncodeKey(pub) }

// DecodeKey parses EncodeKey's output.
func DecodeKey(s string) (ed25519.PublicKey, error) { return trust.DecodeKey(s) }

// peerKey returns the ed25519 key of the leaf certificate the other side
// presented. TLS 1.3's CertificateVerify has already proved that the other
// side holds the matching private key.
func peerKey(rawCerts [][]byte) (ed25519.PublicKey, error) {
	if len(rawCerts) == 0 {
		return nil, errors.New("no certificate presented")
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, fmt.Errorf("parse peer certificate: %w", err)
	}
	pub, ok := leaf.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("peer certificate key is %T, want ed25519", leaf.PublicKey)
	}
	return pub, nil
}
