package gossip

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// SetKeys replaces the keyring: keys[0] encrypts from now on, every key in
// keys decrypts, and keys not listed are dropped.
//
// Rotation (DESIGN §4: removing a machine rotates the network key) takes
// two steps across the mesh, or machines that have not yet learned the new
// key cannot read the ones that already use it:
//  1. on every machine, SetKeys(old, new) — install new, still encrypt with old;
//  2. on every machine, SetKeys(new) — encrypt with new, drop old.
func (n *Node) SetKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return errors.New("gossip: set keys: at least one key is required")
	}
	for i, k := range keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return fmt.Errorf("gossip: set keys: key %d (%d bytes): %w", i, len(k), err)
		}
	}
	n.keyMu.Lock()
	defer n.keyMu.Unlock()
	for i, k := range keys {
		if err := n.keyring.AddKey(clone(k)); err != nil {
			return fmt.Errorf("gossip: set keys: add key %d: %w", i, err)
		}
	}
	if err := n.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("gossip: set keys: use key 0: %w", err)
	}
	// Copy: RemoveKey rewrites the ring's slice in place.
	installed := append([][]byte(nil), n.keyring.GetKeys()...)
	for _, k := range installed {
		keep := false
		for _, w := range keys {
			keep = keep || bytes.Equal(k, w)
		}
		if !keep {
			if err := n.keyring.RemoveKey(k); err != nil {
				return fmt.Errorf("gossip: set keys: remove an old key: %w", err)
			}
		}
	}
	return nil
}
