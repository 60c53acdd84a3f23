package membership

import (
	"context"
	"slices"

	"github.com/uncloud-mesh/uncloud/record"
)

// Seeds (the machines this one joined with, and the machines it admitted)
// carry a machine as a peer until its record replicates. A seed that the
// revoked set names must never become a peer or be known to the machine
// API, not even for the seconds after a start: so seeds are filtered here
// against the revoked set, and a revoked seed is dropped from the machine
// state on disk, so the next start does not peer with it before the store
// has opened.

// revokedSeed reports whether the revoked set names the seed, by machine
// ID or by either key (an admitted machine may be revoked by key alone).
func revokedSeed(revoked map[string]*record.Revoked, s Seed) bool {
	if s.MachineID != "" && revoked[s.MachineID] != nil {
		return true
	}
	wg := s.WireGuardKey.String()
	for _, r := range revoked {
		if (!s.WireGuardKey.IsZero() && r.WireGuardKey == wg) || (s.IdentityKey != "" && r.IdentityKey == s.IdentityKey) {
			return true
		}
	}
	return false
}

// withoutRevokedSeeds filters seeds against the revoked set (once the
// store is attached; before, the machine state on disk was pruned at the
// last revocation seen) and prunes the machine state's own seeds.
func (m *Members) withoutRevokedSeeds(seeds []Seed) []Seed {
	if !m.attached.Load() {
		return seeds
	}
	revoked := m.Revoked(context.Background())
	if len(revoked) == 0 {
		return seeds
	}
	out := slices.DeleteFunc(seeds, func(s Seed) bool { return revokedSeed(revoked, s) })
	if slices.ContainsFunc(m.Snapshot().Seeds, func(s Seed) bool { return revokedSeed(revoked, s) }) {
		_, err := m.UpdateState(func(st *MachineState) error {
			st.Seeds = slices.DeleteFunc(slices.Clone(st.Seeds), func(s Seed) bool { return revokedSeed(revoked, s) })
			return nil
		})
		if err != nil {
			m.log.Error("revoked seeds not dropped from the machine state", "err", err)
		} else {
			m.log.Info("revoked machines dropped from this machine's seeds")
		}
	}
	return out
}
