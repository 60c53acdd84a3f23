package nat

import (
	"bytes"
	"encoding/hex"
	"fmt"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/curve25519"

	"github.com/uncloud-mesh/uncloud/tun"
)

// keyID names a machine on the wire: the first 8 bytes of its WireGuard
// public key. Collisions only cost a failed lookup, never trust: every
// message is also authenticated with a key only the two ends can compute.
type keyID [8]byte

func idOf(k tun.Key) keyID {
	var id keyID
	copy(id[:], k[:8])
	return id
}

func (id keyID) String() string { return hex.EncodeToString(id[:]) }

// pairKeys are the secrets one pair of machines shares for NAT traversal.
// They come from an X25519 exchange between the two WireGuard keys, so
// both ends compute them alone, nothing secret is ever in the state, and
// no third machine (the relay included) can forge either's messages.
type pairKeys struct {
	probe [32]byte // MESSAGE-INTEGRITY of probes and call-me-maybe
	relay [32]byte // MACs of relay headers on the hop between the two
}

// derivePairKeys computes the keys shared by the holder of priv and the
// machine whose public key is peer. Both sides get the same keys: the
// public keys enter the derivation in sorted order.
func derivePairKeys(priv, peer tun.Key) (pairKeys, error) {
	shared, err := curve25519.X25519(priv[:], peer[:])
	if err != nil {
		return pairKeys{}, fmt.Errorf("pair keys with %s: %w", peer, err)
	}
	self := priv.PublicKey()
	lo, hi := self, peer
	if bytes.Compare(lo[:], hi[:]) > 0 {
		lo, hi = hi, lo
	}
	derive := func(label string) [32]byte {
		h, _ := blake2s.New256(shared) // a 32-byte key is always accepted
		h.Write([]byte(label))
		h.Write(lo[:])
		h.Write(hi[:])
		var out [32]byte
		copy(out[:], h.Sum(nil))
		return out
	}
	return pairKeys{probe: derive("uncloud nat probe v1"), relay: derive("uncloud nat relay v1")}, nil
}
