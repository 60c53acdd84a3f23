package membership

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

func testToken(t *testing.T, now time.Time) *Token {
	t.Helper()
	secret, _ := tun.GeneratePrivateKey()
	member, _ := tun.GeneratePrivateKey()
	return &Token{NetworkID: "net1", ID: "tok1", Secret: secret, Slot: 7, Expires: now.Add(time.Hour),
		Members: []TokenMember{{Name: "alpha", WireGuardKey: member.PublicKey(), Subnet: 1,
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:51820")}}}}
}

func TestTokenRoundTrip(t *testing.T) {
	now := time.Now()
	tok := testToken(t, now)
	text, err := tok.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(text, tokenPrefix) || strings.ContainsAny(text, " \n+/=") {
		t.Fatalf("token %q is not one copy-pasteable word", text)
	}
	got, err := ParseToken("  "+text+"\n", now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Secret != tok.Secret || got.JoinAddress() != netip.MustParseAddr("10.210.0.7") || got.Members[0].Name != "alpha" {
		t.Fatalf("parsed %+v", got)
	}
}

func TestParseTokenErrors(t *testing.T) {
	now := time.Now()
	good, _ := testToken(t, now).Encode()
	encode := func(mutate func(*Token)) string {
		tok := testToken(t, now)
		mutate(tok)
		s, _ := tok.Encode()
		return s
	}
	tests := []struct{ name, in, want string }{
		{"empty", "", "does not start with"},
		{"pasted something else", "hello", "does not start with"},
		{"future version", "uncloud-join-v9.abc", "version \"uncloud-join-v9\" is not supported"},
		{"truncated", good[:len(good)-20], "damaged or cut short"},
		{"not base64", tokenPrefix + "!!!", "damaged or cut short"},
		{"unknown field", tokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(`{"net":"n","evil":1}`)), "damaged or cut short"},
		{"huge", tokenPrefix + strings.Repeat("A", maxTokenLen), "far longer than a token"},
		{"expired", encode(func(tk *Token) { tk.Expires = now.Add(-time.Minute) }), "expired at"},
		{"no secret", encode(func(tk *Token) { tk.Secret = tun.Key{} }), "no secret"},
		{"slot 0", encode(func(tk *Token) { tk.Slot = 0 }), "join slot 0"},
		{"slot 255", encode(func(tk *Token) { tk.Slot = 255 }), "join slot 255"},
		{"no members", encode(func(tk *Token) { tk.Members = nil }), "names no machine"},
		{"issuer without endpoint", encode(func(tk *Token) { tk.Members[0].Endpoints = nil }), "published no endpoint"},
		{"member bad subnet", encode(func(tk *Token) { tk.Members[0].Subnet = 0 }), "bad subnet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseToken(tt.in, now)
			if !errors.Is(err, ErrBadToken) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseToken error = %v, want ErrBadToken containing %q", err, tt.want)
			}
		})
	}
}

func TestTokenBookSlotsUsesAndRevocation(t *testing.T) {
	dir := t.TempDir()
	book, err := loadTokenBook(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	k1, _ := tun.GeneratePrivateKey()
	k2, _ := tun.GeneratePrivateKey()
	t1, err := book.add("t1", k1.PublicKey(), time.Hour, 1, now)
	if err != nil || t1.Slot != 2 {
		t.Fatalf("first token: %+v, %v; want slot 2", t1, err)
	}
	t2, _ := book.add("t2", k2.PublicKey(), time.Hour, 2, now)
	if t2.Slot != 3 {
		t.Fatalf("second token slot %d, want 3", t2.Slot)
	}
	tokens, _ := book.peers(now)
	if len(tokens) != 2 || tokens[0].AllowedIPs[0] != netip.MustParsePrefix("10.210.0.2/32") {
		t.Fatalf("token peers = %+v", tokens)
	}

	// Two joins race for the last use of t1: exactly one takes it, the
	// other is told a join is in progress.
	var wg sync.WaitGroup
	results := make(chan error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- book.take("t1", []string{"a", "b"}[i], now)
		}()
	}
	wg.Wait()
	close(results)
	wins, winner := 0, ""
	for err := range results {
		if err == nil {
			wins++
		} else if !errors.Is(err, errTokenBusy) {
			t.Fatalf("losing take error = %v, want busy", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d joins took a single-use token", wins)
	}
	for _, id := range []string{"a", "b"} {
		if book.Tokens[0].Joining == id {
			winner = id
		}
	}
	if err := book.commit("t1", PendingJoin{Seed: Seed{Name: winner, MachineID: winner}, Until: now.Add(time.Hour)}, now); err != nil {
		t.Fatal(err)
	}
	if err := book.take("t1", "c", now); !errors.Is(err, errTokenGone) || !strings.Contains(err.Error(), "has been used") {
		t.Fatalf("take of a used token: %v", err)
	}

	if err := book.revoke("t2"); err != nil {
		t.Fatal(err)
	}
	if err := book.take("t2", "d", now); !errors.Is(err, errTokenGone) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("take of a revoked token: %v", err)
	}
	// Used and revoked tokens keep their temporary peers, so their join
	// call can say why it refuses.
	tokens, pending := book.peers(now.Add(time.Minute))
	if len(tokens) != 2 || len(pending) != 1 {
		t.Fatalf("after use and revocation: %d token peers, %d pending; want 2 and 1", len(tokens), len(pending))
	}

	// The book survives a restart; pruning forgets what is long unusable.
	again, err := loadTokenBook(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.list()) != 2 || len(again.Pending) != 1 {
		t.Fatalf("reloaded book: %d tokens, %d pending, %v", len(again.list()), len(again.Pending), err)
	}
	if err := again.prune(now.Add(26 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if len(again.list()) != 0 || len(again.Pending) != 0 {
		t.Fatalf("after prune: %+v", again.list())
	}
}

// TestTokenUseGivenBack: a use is spent before the join goes on, given
// back when the join fails, and given back at the next start when the
// agent died in the middle of a join (its answer never left).
func TestTokenUseGivenBack(t *testing.T) {
	dir := t.TempDir()
	book, _ := loadTokenBook(dir)
	now := time.Now()
	k, _ := tun.GeneratePrivateKey()
	if _, err := book.add("t1", k.PublicKey(), time.Hour, 1, now); err != nil {
		t.Fatal(err)
	}
	if err := book.take("t1", "a", now); err != nil {
		t.Fatal(err)
	}
	if err := book.giveBack("t1", "a"); err != nil {
		t.Fatal(err)
	}
	if got := book.list()[0]; got.UsesLeft != 1 || got.Joining != "" {
		t.Fatalf("after a failed join: %+v, want the use back", got)
	}
	// kill -9 between take and commit: the file says a join holds a use.
	if err := book.take("t1", "b", now); err != nil {
		t.Fatal(err)
	}
	onDisk, _ := loadTokenBook(dir)
	if got := onDisk.list()[0]; got.UsesLeft != 1 || got.Joining != "" {
		t.Fatalf("after a restart in the middle of a join: %+v, want the use back", got)
	}
	if again, _ := loadTokenBook(dir); again.list()[0].UsesLeft != 1 {
		t.Fatalf("the give-back was not saved: %+v", again.list()[0])
	}
}
