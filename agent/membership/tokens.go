package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/tun"
)

const tokensFile = "tokens.json"

// IssuedToken is the issuer's record of a token: only the public half of
// its one-time key, so nothing here lets anyone join.
type IssuedToken struct {
	ID        string    `json:"id"`
	PublicKey tun.Key   `json:"public_key"`
	Slot      int       `json:"slot"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	UsesLeft  int       `json:"uses_left"`
	LastUsed  time.Time `json:"last_used,omitzero"`
	Revoked   bool      `json:"revoked,omitempty"`
}

// spentGrace keeps a used-up token's temporary peer a little longer, so
// the answer to its last join can still leave through it.
const spentGrace = 30 * time.Second

// needsPeer reports whether the token's temporary peer should exist.
func (t *IssuedToken) needsPeer(now time.Time) bool {
	if t.usable(now) == nil {
		return true
	}
	return !t.Revoked && t.UsesLeft <= 0 && now.Sub(t.LastUsed) < spentGrace
}

// usable reports whether the token may still admit a machine.
func (t *IssuedToken) usable(now time.Time) error {
	switch {
	case t.Revoked:
		return fmt.Errorf("token %s was revoked", t.ID)
	case !now.Before(t.Expires):
		return fmt.Errorf("token %s expired at %s", t.ID, t.Expires.Format(time.RFC3339))
	case t.UsesLeft <= 0:
		return fmt.Errorf("token %s has been used", t.ID)
	}
	return nil
}

// PendingJoin is a machine admitted by this issuer whose own record has
// not replicated yet; the issuer keeps it as a peer meanwhile, so the new
// machine can reach it to gossip and sync.
type PendingJoin struct {
	Seed
	Until time.Time `json:"until"`
}

// tokenBook holds the tokens this machine issued and the joins it admitted.
// Uses are counted here alone (DESIGN §4), so a token cannot be spent twice
// on two machines of the network.
type tokenBook struct {
	path string

	mu      sync.Mutex
	Tokens  []*IssuedToken `json:"tokens"`
	Pending []PendingJoin  `json:"pending"`
}

func loadTokenBook(dataDir string) (*tokenBook, error) {
	b := &tokenBook{path: filepath.Join(dataDir, tokensFile)}
	if err := readJSONFile(b.path, b); err != nil {
		return nil, err
	}
	return b, nil
}

// readJSONFile decodes path into v; a missing file leaves v as it is.
func readJSONFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}

// save runs under b.mu.
func (b *tokenBook) save() error {
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(b.path, data, 0o600)
}

// add registers a new token in the lowest free join slot.
func (b *tokenBook) add(id string, pub tun.Key, ttl time.Duration, uses int, now time.Time) (*IssuedToken, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pruneLocked(now)
	used := map[int]bool{}
	for _, t := range b.Tokens {
		used[t.Slot] = true
	}
	slot := 0
	for s := 2; s <= 254; s++ {
		if !used[s] {
			slot = s
			break
		}
	}
	if slot == 0 {
		return nil, errors.New("253 tokens are outstanding on this machine: revoke some or let them expire")
	}
	t := &IssuedToken{ID: id, PublicKey: pub, Slot: slot, Created: now, Expires: now.Add(ttl), UsesLeft: uses}
	b.Tokens = append(b.Tokens, t)
	if err := b.save(); err != nil {
		b.Tokens = b.Tokens[:len(b.Tokens)-1]
		return nil, err
	}
	return t, nil
}

// bySlot finds the token whose temporary peer sent a join request.
func (b *tokenBook) bySlot(slot int) (IssuedToken, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.Tokens {
		if t.Slot == slot {
			return *t, true
		}
	}
	return IssuedToken{}, false
}

// spend takes one use of a token and records the admitted machine. It
// re-checks the token under the lock, so two joins racing on the last use
// cannot both succeed.
func (b *tokenBook) spend(id string, joined PendingJoin, now time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.Tokens {
		if t.ID != id {
			continue
		}
		if err := t.usable(now); err != nil {
			return err
		}
		t.UsesLeft--
		t.LastUsed = now
		b.Pending = append(b.Pending, joined)
		return b.save()
	}
	return fmt.Errorf("token %s is not outstanding on this machine", id)
}

func (b *tokenBook) revoke(id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.Tokens {
		if t.ID == id {
			t.Revoked = true
			return b.save()
		}
	}
	return fmt.Errorf("no token %s was issued by this machine", id)
}

func (b *tokenBook) list() []IssuedToken {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]IssuedToken, 0, len(b.Tokens))
	for _, t := range b.Tokens {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// peers are the temporary peers of usable tokens, plus admitted machines
// still waiting for their record to replicate.
func (b *tokenBook) peers(now time.Time) (tokens []tun.Peer, pending []Seed) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.Tokens {
		if t.needsPeer(now) {
			addr := meshaddr.JoinAddr(uint8(t.Slot))
			tokens = append(tokens, tun.Peer{PublicKey: t.PublicKey, AllowedIPs: []netip.Prefix{netip.PrefixFrom(addr, 32)}})
		}
	}
	for _, p := range b.Pending {
		if now.Before(p.Until) {
			pending = append(pending, p.Seed)
		}
	}
	return tokens, pending
}

// prune forgets tokens that can no longer be used (a day after they
// stopped being usable, so `token ls` still explains a recent failure)
// and pending joins past their time.
func (b *tokenBook) prune(now time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pruneLocked(now) {
		return b.save()
	}
	return nil
}

func (b *tokenBook) pruneLocked(now time.Time) bool {
	changed := false
	kept := b.Tokens[:0]
	for _, t := range b.Tokens {
		if t.usable(now) != nil && now.Sub(t.Expires) > 24*time.Hour {
			changed = true
			continue
		}
		kept = append(kept, t)
	}
	b.Tokens = kept
	pending := b.Pending[:0]
	for _, p := range b.Pending {
		if now.Before(p.Until) {
			pending = append(pending, p)
		} else {
			changed = true
		}
	}
	b.Pending = pending
	return changed
}
