package membership

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
)

// Gossip key rotation. Removing a machine rotates the key that encrypts
// gossip, so that the removed machine, should it still reach the mesh
// somehow, reads nothing. The remover makes a new keyring (epoch+1) and
// pushes it over the machine API (mutual TLS, known machines only) to
// every machine it reaches; the others, partitioned or down at that
// moment, pull it from any machine within keyringPullInterval once they
// can reach one. Two rotations in two partitions give two keyrings of one
// epoch: the higher key wins, so every machine ends on the same one.
//
// A machine keeps decrypting with the previous key for keyringGrace after
// it adopts a new one: the machines that have not adopted it yet still
// encrypt with the old key, and their messages must not be lost.

const (
	keyringPullInterval = 20 * time.Second
	keyringGrace        = 2 * time.Minute
	keyringStartupRetry = 2 * time.Second
	// maxKeyringBody bounds a pushed keyring with its revocations.
	maxKeyringBody = 1 << 20
	// maxCarriedRevocations bounds the revocations one keyring carries.
	maxCarriedRevocations = 512
	// epochSlack is how far an epoch may run ahead of the removals this
	// machine knows of. Every rotation follows a removal, so a keyring's
	// epoch is at most the number of removals; the slack only forgives
	// a removal whose record has not arrived yet.
	epochSlack = 2
)

// Errors of keyring adoption.
var (
	errEpochTooHigh = errors.New("keyring epoch is beyond the removals this machine knows of")
	errNotNewer     = errors.New("keyring is not newer than this machine's")
)

// gossipKeyring is the key in use first, then keys still accepted: the
// machine API's keyring, with the rules for choosing between two.
type gossipKeyring api.GossipKeyring

// newer says whether k should replace cur.
func (k gossipKeyring) newer(cur gossipKeyring) bool {
	if len(k.Keys) == 0 {
		return false
	}
	if k.Epoch != cur.Epoch {
		return k.Epoch > cur.Epoch
	}
	return len(cur.Keys) > 0 && bytes.Compare(k.Keys[0], cur.Keys[0]) > 0
}

func (k gossipKeyring) validate() error {
	if len(k.Keys) == 0 {
		return errors.New("keyring has no key")
	}
	for i, key := range k.Keys {
		if len(key) != 32 {
			return fmt.Errorf("keyring key %d is %d bytes, want 32", i, len(key))
		}
	}
	return nil
}

// KeyFingerprint names a key without revealing it.
func KeyFingerprint(key []byte) string {
	sum := sha256.Sum256(append([]byte("uncloud gossip key fingerprint\x00"), key...))
	return hex.EncodeToString(sum[:6])
}

func (m *Members) keyring() gossipKeyring {
	st := m.Snapshot()
	return gossipKeyring{Epoch: st.GossipKeyEpoch, Keys: st.GossipKeys}
}

// adoptKeyring switches to k if it is newer than ours: saved first, then
// used, with our previous key still accepted for keyringGrace.
func (m *Members) adoptKeyring(k gossipKeyring) (bool, error) {
	if err := k.validate(); err != nil {
		return false, err
	}
	// The bound is what keeps a keyring from being pinned: an epoch near
	// 2^64 would be adopted everywhere and no rotation could follow it.
	if limit := uint64(len(m.Revoked(m.ctx))) + epochSlack; k.Epoch > limit {
		return false, fmt.Errorf("%w: epoch %d, limit %d", errEpochTooHigh, k.Epoch, limit)
	}
	var previous []byte
	adopted := false
	_, err := m.UpdateState(func(s *MachineState) error {
		if !k.newer(gossipKeyring{Epoch: s.GossipKeyEpoch, Keys: s.GossipKeys}) {
			return nil
		}
		previous = s.GossipKeys[0]
		s.GossipKeys, s.GossipKeyEpoch = [][]byte{k.Keys[0]}, k.Epoch
		adopted = true
		return nil
	})
	if err != nil || !adopted {
		return false, err
	}
	if err := m.parts.Gossip.SetKeys([][]byte{k.Keys[0], previous}); err != nil {
		return false, fmt.Errorf("install gossip key of epoch %d: %w", k.Epoch, err)
	}
	m.log.Info("gossip key rotated", "epoch", k.Epoch, "key", KeyFingerprint(k.Keys[0]))
	// A machine that was away during the rotation failed its joins with
	// the old key and would otherwise wait for the rejoin timer.
	m.Rejoin(m.ctx)
	newKey := k.Keys[0]
	m.cfg.Go(func() {
		select {
		case <-time.After(m.grace):
		case <-m.ctx.Done():
			return
		}
		// Only if nothing newer came meanwhile: that one set its own keys.
		if cur := m.keyring(); bytes.Equal(cur.Keys[0], newKey) {
			if err := m.parts.Gossip.SetKeys([][]byte{newKey}); err != nil {
				m.log.Warn("drop the previous gossip key", "err", err)
			}
		}
	})
	return true, nil
}

// rotateGossipKey makes a new keyring and pushes it to every known
// machine; it returns the names of those that did not take it.
func (m *Members) rotateGossipKey(ctx context.Context) (reached int, missed []string, err error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return 0, nil, err
	}
	cur := m.keyring()
	if cur.Epoch == math.MaxUint64 {
		return 0, nil, errors.New("the gossip key epoch is at its maximum")
	}
	k := gossipKeyring{Epoch: cur.Epoch + 1, Keys: [][]byte{key}}
	if err := k.validate(); err != nil {
		return 0, nil, err
	}
	carried, err := m.carriedRevocations(ctx)
	if err != nil {
		return 0, nil, err
	}
	machines, err := m.MachineRecords(ctx)
	if err != nil {
		return 0, nil, err
	}
	// Accept the new key before anyone uses it, but keep encrypting with
	// the old one until the others have it: what this machine gossips
	// meanwhile (the revocation that caused the rotation, first of all)
	// must stay readable to machines the push has not reached yet.
	if err := m.parts.Gossip.SetKeys([][]byte{cur.Keys[0], key}); err != nil {
		return 0, nil, fmt.Errorf("accept the new gossip key: %w", err)
	}
	defer func() {
		if _, aerr := m.adoptKeyring(k); aerr != nil && err == nil {
			err = aerr
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, mr := range machines {
		if mr.ID == m.state.MachineID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			push := api.GossipKeyring(k)
			push.Revocations = carried
			err := m.parts.Calls.PushKeyring(ctx, mr.ID, push)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				m.log.Info("gossip key not pushed; the machine pulls it when reachable", "machine", mr.Name, "err", err)
				missed = append(missed, mr.Name)
				return
			}
			reached++
		}()
	}
	wg.Wait()
	return reached, missed, nil
}

// HandleGetKeyring answers GET api.MachinePathKeyring: this machine's
// keyring, with the revocations that explain its epoch.
func (m *Members) HandleGetKeyring(w http.ResponseWriter, r *http.Request) {
	k := api.GossipKeyring(m.keyring())
	carried, err := m.carriedRevocations(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	k.Revocations = carried
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(k)
}

// HandlePushKeyring answers POST api.MachinePathKeyring: apply the
// revocations it carries, then adopt the keyring if it is newer. It
// answers 204 when this machine now uses the key, 409 when it does not
// (so a rotation counts only the machines that took it).
func (m *Members) HandlePushKeyring(w http.ResponseWriter, r *http.Request) {
	var k api.GossipKeyring
	if err := json.NewDecoder(io.LimitReader(r.Body, maxKeyringBody)).Decode(&k); err != nil {
		http.Error(w, "malformed keyring: "+err.Error(), http.StatusBadRequest)
		return
	}
	m.applyRevocations(r.Context(), k.Revocations)
	// The pusher may be the machine those revocations remove.
	if caller, ok := api.Caller(r.Context()); ok && m.isRevoked(r.Context(), caller) {
		http.Error(w, "the pushing machine has been removed", http.StatusForbidden)
		return
	}
	ring := gossipKeyring{Epoch: k.Epoch, Keys: k.Keys}
	adopted, err := m.adoptKeyring(ring)
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusConflict)
	case adopted || bytes.Equal(m.keyring().Keys[0], ring.Keys[0]):
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, errNotNewer.Error(), http.StatusConflict)
	}
}

// carriedRevocations are the revocations this machine believes, signed
// as their removers wrote them.
func (m *Members) carriedRevocations(ctx context.Context) ([]api.SignedRecord, error) {
	var out []api.SignedRecord
	for _, rv := range m.Revoked(ctx) {
		raw, err := m.parts.Records.GetSigned(ctx, rv.Key())
		if err != nil {
			continue // deleted or replaced meanwhile
		}
		out = append(out, api.SignedRecord{Key: rv.Key(), Raw: raw})
		if len(out) == maxCarriedRevocations {
			break
		}
	}
	return out, nil
}

// applyRevocations stores carried revocations that verify; the store
// refreshes its trust view before PutSigned returns.
func (m *Members) applyRevocations(ctx context.Context, recs []api.SignedRecord) {
	if len(recs) > maxCarriedRevocations {
		recs = recs[:maxCarriedRevocations]
	}
	for _, sr := range recs {
		if !strings.HasPrefix(sr.Key, record.RevokedPrefix) {
			continue
		}
		if err := m.parts.Records.PutSigned(ctx, sr.Key, sr.Raw); err != nil {
			m.log.Warn("carried revocation refused", "key", sr.Key, "err", err)
		}
	}
}

// isRevoked says whether the machine has been removed.
func (m *Members) isRevoked(ctx context.Context, id string) bool {
	return m.Revoked(ctx)[id] != nil
}

// PullKeyrings is how a machine that was down or partitioned during a
// rotation catches up: its gossip cannot carry the news, it no longer has
// the key. Right after start it asks every known machine at once, every
// keyringStartupRetry, until a majority of them have answered: one other
// machine that is just as stale (restarted too, or removed without this
// one knowing yet) must not convince it that its key is current. Then it
// asks one random machine every keyringPullInterval.
func (m *Members) PullKeyrings(ctx context.Context) {
	answered := map[string]bool{}
	for wait := time.Duration(0); ; {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		others := m.otherKnown(ctx)
		settled := func() bool { return len(others) > 0 && len(answered) > len(others)/2 }
		switch {
		case len(others) == 0:
		case !settled():
			for _, id := range m.pullKeyringsFrom(ctx, others) {
				answered[id] = true
			}
		default:
			m.pullKeyringsFrom(ctx, []string{others[mrand.N(len(others))]})
		}
		wait = m.pullStartupRetry
		if settled() {
			wait = m.pullInterval/2 + mrand.N(m.pullInterval)
		}
	}
}

// pullKeyringsFrom asks the machines at once, adopts the newest keyring
// heard (if newer than ours) and returns who answered.
func (m *Members) pullKeyringsFrom(ctx context.Context, ids []string) []string {
	type answer struct {
		id string
		k  gossipKeyring
		rv []api.SignedRecord
	}
	answers := make(chan answer, len(ids))
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if k, err := m.parts.Calls.Keyring(callCtx, id); err == nil {
				answers <- answer{id, gossipKeyring{Epoch: k.Epoch, Keys: k.Keys}, k.Revocations} // unreachable ones are asked next round
			}
		})
	}
	wg.Wait()
	close(answers)
	var who []string
	var newest *answer
	for a := range answers {
		who = append(who, a.id)
		m.applyRevocations(ctx, a.rv)
		if m.isRevoked(ctx, a.id) {
			continue
		}
		if err := a.k.validate(); err != nil {
			m.log.Warn("keyring from another machine refused", "machine", a.id, "err", err)
			continue
		}
		if newest == nil || a.k.newer(newest.k) {
			newest = &a
		}
	}
	if newest != nil {
		if _, err := m.adoptKeyring(newest.k); err != nil {
			m.log.Warn("keyring from another machine refused", "machine", newest.id, "err", err)
		}
	}
	return who
}
