package tun

import (
	"encoding/hex"
	"strings"
	"testing"
)

func TestPublicKeyMatchesRFC7748(t *testing.T) {
	// Alice's key pair from RFC 7748 §6.1.
	priv := mustHexKey(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	want := mustHexKey(t, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
	if got := priv.PublicKey(); got != want {
		t.Fatalf("public key = %x, want %x", got, want)
	}
}

func TestGeneratePrivateKeyIsClampedAndRoundTrips(t *testing.T) {
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if k[0]&7 != 0 || k[31]&128 != 0 || k[31]&64 == 0 {
		t.Fatalf("key not clamped: %x", k)
	}
	parsed, err := ParseKey(k.String())
	if err != nil || parsed != k {
		t.Fatalf("ParseKey(String()) = %v, %v; want the same key", parsed, err)
	}
}

func TestParseKeyErrors(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"not base64", "not-a-key!!", "not base64"},
		{"short", "AAAA", "decodes to 3 bytes"},
		{"zero", strings.Repeat("A", 43) + "=", "all zeros"},
		{"empty", "", "decodes to 0 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKey(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseKey(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestParseKeyErrorDoesNotEchoSecret(t *testing.T) {
	secret := "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA" // wrong length, not padded
	_, err := ParseKey(secret)
	if err == nil || strings.Contains(err.Error(), secret[8:]) {
		t.Fatalf("error %v echoes the key", err)
	}
}

func mustHexKey(t *testing.T, s string) Key {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != KeyLen {
		t.Fatalf("bad test key %q", s)
	}
	var k Key
	copy(k[:], b)
	return k
}
