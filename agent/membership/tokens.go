package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/uncloud-mesh/uncloud/internal/atomicfile"
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
	// Joining is the machine whose join holds one of the uses now: the use
	// is spent (saved) before a subnet is reserved, and given back if the
	// join fails. It is saved too, so a join cut short by a crash gives its
	// use back at the next start (loadTokenBook): its answer never left.
	Joining string `json:"joining,omitempty"`
}

// A token's temporary peer stays for as long as the issuer keeps the
// token's record (a day past its expiry, see pruneLocked), whatever state
// the token is in: the join filter lets that peer reach nothing but the
// join call, and the join call answers a used, revoked or expired token
// at once (410), so its holder learns why in one round trip instead of
// waiting out handshake timeouts against a peer that is gone.

// errTokenGone wraps every reason a token can never admit a machine again
// (used, revoked, expired): the join call answers it with 410.
var errTokenGone = errors.New("token can no longer be used")

// errTokenBusy means another join holds the token now (409): only one join
// per token runs at a time, so a flood of joins with one token cannot
// spend more than the uses it has, nor reserve a subnet per attempt.
var errTokenBusy = errors.New("a join with this token is in progress")

// usable reports whether the token may still admit a machine.
func (t *IssuedToken) usable(now time.Time) error {
	switch {
	case t.Revoked:
		return fmt.Errorf("%w: token %s was revoked; ask a machine of the network for a new one ('uncloud token')", errTokenGone, t.ID)
	case !now.Before(t.Expires):
		return fmt.Errorf("%w: token %s expired at %s", errTokenGone, t.ID, t.Expires.Format(time.RFC3339))
	case t.UsesLeft <= 0 && t.Joining == "":
		return fmt.Errorf("%w: token %s has been used; ask a machine of the network for a new one ('uncloud token')", errTokenGone, t.ID)
	case t.Joining != "":
		return fmt.Errorf("%w (token %s)", errTokenBusy, t.ID)
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
	// A join in progress when the agent stopped never answered its joiner
	// (commit is saved before the answer is sent): give its use back.
	changed := false
	for _, t := range b.Tokens {
		if t.Joining != "" {
			t.UsesLeft++
			t.Joining = ""
			changed = true
		}
	}
	if changed {
		if err := b.save(); err != nil {
			return nil, err
		}
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
	return atomicfile.Write(b.path, data, 0o600)
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

// take spends one use of a token for machineID's join and marks the join
// in progress, saved, before anything else happens for that join (subnet
// reservation included). It fails with errTokenBusy while another join
// holds the token and errTokenGone once it cannot be used. Every take is
// followed by commit or giveBack.
func (b *tokenBook) take(id, machineID string, now time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.findLocked(id)
	if t == nil {
		return fmt.Errorf("%w: token %s is not outstanding on this machine", errTokenGone, id)
	}
	if err := t.usable(now); err != nil {
		return err
	}
	t.UsesLeft--
	t.Joining = machineID
	if err := b.save(); err != nil {
		t.UsesLeft++
		t.Joining = ""
		return fmt.Errorf("save the token's use: %w", err)
	}
	return nil
}

// commit ends a join that took a use: the machine is admitted and kept as
// a pending peer until its record replicates.
func (b *tokenBook) commit(id string, joined PendingJoin, now time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.findLocked(id)
	if t == nil || t.Joining != joined.MachineID {
		return fmt.Errorf("token %s holds no join of machine %s", id, joined.MachineID)
	}
	t.Joining = ""
	t.LastUsed = now
	b.Pending = append(b.Pending, joined)
	if err := b.save(); err != nil {
		t.Joining = joined.MachineID
		b.Pending = b.Pending[:len(b.Pending)-1]
		return fmt.Errorf("save the admitted machine: %w", err)
	}
	return nil
}

// giveBack returns the use a failed join took.
func (b *tokenBook) giveBack(id, machineID string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.findLocked(id)
	if t == nil || t.Joining != machineID {
		return nil
	}
	t.Joining = ""
	t.UsesLeft++
	return b.save()
}

func (b *tokenBook) findLocked(id string) *IssuedToken {
	for _, t := range b.Tokens {
		if t.ID == id {
			return t
		}
	}
	return nil
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

// peers are the temporary peers of every token kept (see errTokenGone's
// comment for why used and revoked ones keep theirs), plus admitted machines
// still waiting for their record to replicate.
func (b *tokenBook) peers(now time.Time) (tokens []tun.Peer, pending []Seed) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range b.Tokens {
		addr := meshaddr.JoinAddr(uint8(t.Slot))
		tokens = append(tokens, tun.Peer{PublicKey: t.PublicKey, AllowedIPs: []netip.Prefix{netip.PrefixFrom(addr, 32)}})
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
