package sealing

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"slices"
	"testing"
)

func seed(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func key(t *testing.T, b byte) *ecdh.PrivateKey {
	t.Helper()
	k, err := KeyFromSeed(seed(b))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyFromSeed(t *testing.T) {
	a1, a2, b := key(t, 1), key(t, 1), key(t, 2)
	if !a1.Equal(a2) {
		t.Fatal("same seed, different sealing keys")
	}
	if a1.Equal(b) {
		t.Fatal("different seeds, same sealing key")
	}
	pub, err := PublicFromSeed(seed(1))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePublic(pub)
	if err != nil || !p.Equal(a1.PublicKey()) {
		t.Fatalf("published key does not parse back: %v", err)
	}
	if _, err := KeyFromSeed(make([]byte, 16)); err == nil {
		t.Fatal("a 16-byte seed was accepted")
	}
	for _, bad := range []string{"", "!!", "AAAA"} {
		if _, err := ParsePublic(bad); err == nil {
			t.Errorf("ParsePublic(%q) accepted", bad)
		}
	}
}

func TestSealOpen(t *testing.T) {
	m1, m2, m3 := key(t, 1), key(t, 2), key(t, 3)
	plain := []byte("-----BEGIN EC PRIVATE KEY----- secret")
	aad := []byte("certificates/ca/a.test/a.test.key")
	to := []Recipient{{"m1", m1.PublicKey()}, {"m2", m2.PublicKey()}}
	blob, err := Seal(plain, aad, to, []string{"old"})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, plain) {
		t.Fatal("plain text in the blob")
	}
	for _, c := range []struct {
		name    string
		id      string
		key     *ecdh.PrivateKey
		aad     []byte
		blob    func() []byte
		wantErr bool
	}{
		{"recipient m1", "m1", m1, aad, nil, false},
		{"recipient m2", "m2", m2, aad, nil, false},
		{"not a recipient", "m3", m3, aad, nil, true},
		{"non-recipient claims a recipient's id", "m1", m3, aad, nil, true},
		{"recipient under another's id", "m2", m1, aad, nil, true},
		{"moved to another name", "m1", m1, []byte("certificates/ca/b.test/b.test.key"), nil, true},
		{"content flipped", "m1", m1, aad, func() []byte {
			b := slices.Clone(blob)
			b[len(b)-1] ^= 1
			return b
		}, true},
		{"header edited (exposure history)", "m1", m1, aad, func() []byte {
			return bytes.Replace(slices.Clone(blob), []byte(`"old"`), []byte(`"olx"`), 1)
		}, true},
		{"truncated", "m1", m1, aad, func() []byte { return blob[:40] }, true},
		{"version 1", "m1", m1, aad, func() []byte { b := slices.Clone(blob); b[0] = 1; return b }, true},
	} {
		b := blob
		if c.blob != nil {
			b = c.blob()
		}
		got, h, err := Open(b, c.aad, c.id, c.key)
		if c.wantErr {
			if err == nil {
				t.Errorf("%s: opened", c.name)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("%s: %q %v", c.name, got, err)
			continue
		}
		if !slices.Equal(h.RecipientIDs(), []string{"m1", "m2"}) || !slices.Equal(h.Exposed, []string{"m1", "m2", "old"}) {
			t.Errorf("%s: header %v exposed %v", c.name, h.RecipientIDs(), h.Exposed)
		}
	}
	if _, _, err := Open(blob, aad, "m3", m3); !errors.Is(err, ErrNotRecipient) {
		t.Fatalf("non-recipient: %v, want ErrNotRecipient", err)
	}
	h, err := ParseHeader(blob)
	if err != nil || !slices.Equal(h.RecipientIDs(), []string{"m1", "m2"}) {
		t.Fatalf("ParseHeader: %v %v", h.RecipientIDs(), err)
	}
	// Re-sealing for a new set: the dropped machine's key no longer
	// opens it, the history keeps it.
	re, err := Seal(plain, aad, []Recipient{{"m1", m1.PublicKey()}, {"m3", m3.PublicKey()}}, h.Exposed)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(re, aad, "m2", m2); err == nil {
		t.Fatal("dropped recipient opens the re-sealed blob")
	}
	if got, h, err := Open(re, aad, "m3", m3); err != nil || !bytes.Equal(got, plain) || !slices.Contains(h.Exposed, "m2") {
		t.Fatalf("new recipient: %q %v %v", got, h.Exposed, err)
	}
	if _, err := Seal(plain, aad, nil, nil); err == nil {
		t.Fatal("sealed for nobody")
	}
}

func BenchmarkSeal3(b *testing.B) {
	var to []Recipient
	for i := byte(1); i <= 3; i++ {
		k, _ := KeyFromSeed(seed(i))
		to = append(to, Recipient{string('a' + rune(i)), k.PublicKey()})
	}
	plain := make([]byte, 2048)
	for b.Loop() {
		if _, err := Seal(plain, []byte("k"), to, nil); err != nil {
			b.Fatal(err)
		}
	}
}
