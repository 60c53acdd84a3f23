package membership

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/sealing"
	"github.com/uncloud-mesh/uncloud/tun"
)

// Known is a machine this one may talk to over the machine API: from the
// records, or, before those have replicated, from the seeds it joined
// with and the machines it admitted.
type Known struct {
	ID          string
	Subnet      meshaddr.Subnet
	IdentityKey string
}

// Known is who may call this machine's API, and whom it may call. The
// peer manager publishes this view (SetKnown) whenever it applies peers
// (every record change, revocation, token change, and every 30 s), so the
// checks on every TLS handshake and request read a snapshot instead of
// scanning the store; before its first pass the view is built from the
// store.
func (m *Members) Known(ctx context.Context) []Known {
	if known := m.known.Load(); known != nil {
		return *known
	}
	_, seeds := m.PeerSeeds(m.now())
	if !m.attached.Load() {
		// The store fetches blocks while it opens, before it is attached:
		// only the seeds and pending joiners are known then.
		return buildKnown(nil, nil, seeds)
	}
	machines, err := m.MachineRecords(ctx)
	if err != nil {
		m.log.Error("list known machines", "err", err)
	}
	return buildKnown(machines, m.Revoked(ctx), seeds)
}

// SetKnown publishes the view of known machines the peer manager derived
// from the live records, the revoked set and the seeds (PeerSeeds).
func (m *Members) SetKnown(records []*record.Machine, revoked map[string]*record.Revoked, seeds []Seed) {
	known := buildKnown(records, revoked, seeds)
	m.known.Store(&known)
}

// buildKnown merges records and seeds (records first: they are newer);
// a revoked machine is never known again, whatever a seed says.
func buildKnown(machines []*record.Machine, revoked map[string]*record.Revoked, seeds []Seed) []Known {
	var out []Known
	seen := map[string]bool{}
	for id := range revoked {
		seen[id] = true
	}
	for _, m := range machines {
		if n, err := meshaddr.ParseSubnet(m.Subnet); err == nil && !seen[m.ID] {
			out = append(out, Known{ID: m.ID, Subnet: n, IdentityKey: m.IdentityKey})
			seen[m.ID] = true
		}
	}
	for _, s := range seeds {
		n, err := meshaddr.SubnetOfPrefix(s.Subnet)
		if s.MachineID == "" || seen[s.MachineID] || err != nil {
			continue
		}
		out = append(out, Known{ID: s.MachineID, Subnet: n, IdentityKey: s.IdentityKey})
		seen[s.MachineID] = true
	}
	return out
}

// otherKnown are the IDs of the known machines but this one.
func (m *Members) otherKnown(ctx context.Context) []string {
	var others []string
	for _, k := range m.Known(ctx) {
		if k.ID != m.state.MachineID {
			others = append(others, k.ID)
		}
	}
	return others
}

// PeerSeeds are the temporary peers of usable tokens, and the machines
// to keep as peers until their records have replicated: the seeds of
// this machine's join, then the machines it admitted.
func (m *Members) PeerSeeds(now time.Time) (tokenPeers []tun.Peer, seeds []Seed) {
	tokenPeers, pending := m.tokens.peers(now)
	return tokenPeers, m.withoutRevokedSeeds(append(append([]Seed(nil), m.Snapshot().Seeds...), pending...))
}

// PruneTokens forgets tokens and pending joins past their time.
func (m *Members) PruneTokens(now time.Time) error { return m.tokens.prune(now) }

// MachineRecords lists the machine records, without revoked machines.
func (m *Members) MachineRecords(ctx context.Context) ([]*record.Machine, error) {
	recs, err := m.parts.Records.List(ctx, record.MachinesPrefix)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	revoked := m.Revoked(ctx)
	out := make([]*record.Machine, 0, len(recs))
	for _, r := range recs {
		if mr, ok := r.(*record.Machine); ok && revoked[mr.ID] == nil {
			out = append(out, mr)
		}
	}
	return out, nil
}

// Revoked is the add-only set of removed machines, by machine ID.
func (m *Members) Revoked(ctx context.Context) map[string]*record.Revoked {
	out := map[string]*record.Revoked{}
	if m.parts.Records == nil {
		return out // not attached yet: nothing is known to be removed
	}
	recs, err := m.parts.Records.List(ctx, record.RevokedPrefix)
	if err != nil {
		m.log.Error("read revoked machines", "err", err)
		return out
	}
	for _, r := range recs {
		if rv, ok := r.(*record.Revoked); ok {
			out[rv.MachineID] = rv
		}
	}
	return out
}

// Publish writes this machine's record; only this machine writes it.
func (m *Members) Publish(ctx context.Context) error {
	st := m.Snapshot()
	rec := &record.Machine{
		ID:           m.state.MachineID,
		Name:         st.Name,
		Roles:        st.Roles,
		Labels:       st.Labels,
		Subnet:       m.state.Subnet.String(),
		WireGuardKey: m.state.WireGuardKey.PublicKey().String(),
		IdentityKey:  api.EncodeKey(m.cfg.Identity.PublicKey()),
		Endpoints:    EndpointStrings(m.cfg.Endpoints()),
		Membership:   m.state.Membership,
	}
	if k, err := sealing.PublicFromSeed(m.state.IdentitySeed); err == nil {
		rec.SealKey = k // the ingress seals certificate keys for it
	}
	if cur, err := m.parts.Records.Get(ctx, rec.Key()); err == nil {
		if mr, ok := cur.(*record.Machine); ok && sameMachine(mr, rec) {
			return nil // unchanged: do not grow the DAG on every restart
		}
	}
	if err := m.parts.Records.Put(ctx, rec.Key(), rec); err != nil {
		return fmt.Errorf("publish machine record: %w", err)
	}
	return nil
}

func sameMachine(a, b *record.Machine) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Subnet == b.Subnet && a.WireGuardKey == b.WireGuardKey &&
		a.IdentityKey == b.IdentityKey && a.SealKey == b.SealKey && slices.Equal(a.Endpoints, b.Endpoints) &&
		slices.Equal(a.Roles, b.Roles) && maps.Equal(a.Labels, b.Labels) && reflect.DeepEqual(a.Membership, b.Membership)
}

// RemoveMachine implements api.Backend's: the machine's keys go into the
// add-only revoked set, which every machine's peer manager and machine API
// check, its record is deleted and the gossip key is rotated. The removed
// machine cannot come back with its old keys, even if it missed the
// removal and rewrites its record.
func (m *Members) RemoveMachine(ctx context.Context, nameOrID string) (api.RemoveResult, error) {
	target, err := m.findMachine(ctx, nameOrID)
	if err != nil {
		return api.RemoveResult{}, err
	}
	if target.ID == m.state.MachineID {
		return api.RemoveResult{}, fmt.Errorf("%w: %s is this machine; remove it from another machine of the network", api.ErrBadRequest, target.Name)
	}
	// What the machine signed while it was trusted (the machines it
	// admitted, services and their histories it wrote, removals it made) stays believed;
	// anything else it signs, before or after, is void.
	kept, err := m.parts.Records.SignedBy(ctx, target.ID, record.ServicesPrefix, record.HistoryPrefix, record.RevokedPrefix, record.CertsPrefix, record.SecretsPrefix)
	if err != nil {
		return api.RemoveResult{}, fmt.Errorf("list what %s signed: %w", target.Name, err)
	}
	machines, err := m.MachineRecords(ctx)
	if err != nil {
		return api.RemoveResult{}, err
	}
	var admitted []string
	for _, mr := range machines {
		if ms := mr.Membership; ms != nil && ms.Issuer == target.ID && mr.ID != target.ID {
			kept = append(kept, crdt.SignatureDigest(ms.Sig))
			admitted = append(admitted, mr.Name)
		}
	}
	rec := &record.Revoked{MachineID: target.ID, Name: target.Name, WireGuardKey: target.WireGuardKey,
		IdentityKey: target.IdentityKey, By: m.state.MachineID, At: m.now().UTC(), Kept: kept, Membership: target.Membership}
	if err := m.parts.Records.Put(ctx, rec.Key(), rec); err != nil {
		return api.RemoveResult{}, fmt.Errorf("revoke %s: %w", target.Name, err)
	}
	if err := m.parts.Records.Delete(ctx, target.Key()); err != nil && !errors.Is(err, crdt.ErrNotFound) {
		m.log.Warn("revoked machine's record not deleted", "machine", target.Name, "err", err)
	}
	m.cfg.PokePeers()
	m.log.Info("machine removed", "name", target.Name, "id", target.ID)
	res := api.RemoveResult{Name: target.Name, Admitted: admitted}
	// The revocation must be known (and the removed machine no longer
	// authorized) before the new key travels, hence the order.
	reached, missed, err := m.rotateGossipKey(ctx)
	if err != nil {
		return res, fmt.Errorf("%s is removed, but rotating the gossip key failed: %w", target.Name, err)
	}
	res.Rotated, res.Missed, res.Machines = reached, missed, reached+len(missed)
	return res, nil
}
