package main

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

// keyPair is a WireGuard key pair in the base64 form wg(8) and uncloud's
// config both read.
type keyPair struct {
	private, public string
}

// newKeyPair makes a Curve25519 key pair with the standard library, so the
// harness needs neither wg(8) nor a package under development to make keys.
func newKeyPair() (keyPair, error) {
	var priv [32]byte
	if _, err := rand.Read(priv[:]); err != nil {
		return keyPair{}, fmt.Errorf("generate private key: %w", err)
	}
	// Clamp as wg genkey does (RFC 7748), so the stored key is canonical.
	priv[0] &= 248
	priv[31] = (priv[31] & 127) | 64
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return keyPair{}, fmt.Errorf("derive public key: %w", err)
	}
	return keyPair{
		private: base64.StdEncoding.EncodeToString(priv[:]),
		public:  base64.StdEncoding.EncodeToString(k.PublicKey().Bytes()),
	}, nil
}
