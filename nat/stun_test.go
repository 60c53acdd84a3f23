package nat

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/uncloud-mesh/uncloud/tun"
)

func mustKey(t *testing.T) tun.Key {
	t.Helper()
	k, err := tun.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func decode(t *testing.T, raw []byte) *stun.Message {
	t.Helper()
	m := &stun.Message{Raw: append([]byte(nil), raw...)}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPairKeysAgree: both ends derive the same keys, a third machine
// derives different ones.
func TestPairKeysAgree(t *testing.T) {
	a, b, c := mustKey(t), mustKey(t), mustKey(t)
	ab, err := derivePairKeys(a, b.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	ba, _ := derivePairKeys(b, a.PublicKey())
	ac, _ := derivePairKeys(a, c.PublicKey())
	if ab != ba {
		t.Fatal("the two ends of a pair derive different keys")
	}
	if ab.probe == ac.probe || ab.relay == ac.relay || ab.probe == ab.relay {
		t.Fatal("keys of different pairs or purposes coincide")
	}
}

func TestProbeAuthentication(t *testing.T) {
	a, b, c := mustKey(t), mustKey(t), mustKey(t)
	ab, _ := derivePairKeys(a, b.PublicKey())
	cb, _ := derivePairKeys(c, b.PublicKey())
	aID, bID := idOf(a.PublicKey()), idOf(b.PublicKey())
	now := time.Now()
	probe, err := authenticated(ab.probe, aID, bID, []stun.Setter{stun.TransactionID, stun.BindingRequest})
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := authenticated(cb.probe, aID, bID, []stun.Setter{stun.TransactionID, stun.BindingRequest})

	from, to, ok := parseUsername(decode(t, probe.Raw))
	if !ok || from != aID || to != bID {
		t.Fatalf("username: %v %v %v", from, to, ok)
	}
	tamper := append([]byte(nil), probe.Raw...)
	tamper[len(tamper)-40] ^= 1 // inside the timestamp or username, before MESSAGE-INTEGRITY
	tests := []struct {
		name string
		raw  []byte
		now  time.Time
		want error
	}{
		{"genuine", probe.Raw, now, nil},
		{"keyed by another machine", forged.Raw, now, errIntegrity},
		{"too old", probe.Raw, now.Add(maxClockSkew + time.Second), errStale},
		{"from the future", probe.Raw, now.Add(-maxClockSkew - time.Second), errStale},
	}
	for _, tt := range tests {
		if err := checkAuthenticated(decode(t, tt.raw), ab.probe, tt.now); err != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	if m := (&stun.Message{Raw: tamper}); m.Decode() == nil {
		if err := checkAuthenticated(m, ab.probe, now); err == nil {
			t.Error("a tampered probe passed")
		}
	}
}

func TestBindingSuccessCarriesMappedAddress(t *testing.T) {
	req, err := discoveryRequest()
	if err != nil {
		t.Fatal(err)
	}
	from := netip.MustParseAddrPort("198.18.1.7:40000")
	resp, err := bindingSuccess(decode(t, req.Raw), from, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, resp.Raw)
	if m.TransactionID != req.TransactionID || m.Type != stun.BindingSuccess {
		t.Fatalf("response %v does not answer %v", m, req)
	}
	got, err := mappedAddress(m)
	if err != nil || got != from {
		t.Fatalf("mapped %v %v, want %v", got, err, from)
	}
	if tun.ClassifyPacket(resp.Raw) != tun.KindSTUN {
		t.Fatal("the Bind would not take the answer for STUN")
	}
}
