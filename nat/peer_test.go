package nat

import (
	"net/netip"
	"testing"
	"time"
)

// TestDirectProbeDue: when a chosen direct path is probed, and when it
// counts as dead. Probes cost an idle agent most of its CPU with many
// peers, so a path that WireGuard proves, or that carries nothing, is
// probed rarely; one that is sent into without an answer is probed at
// once and dropped 5 s after the first unanswered probe.
func TestDirectProbeDue(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	ep := netip.MustParseAddrPort("198.18.1.2:51820")
	// Times are offsets from t0; a zero unanswered/txAt means "none".
	type times struct{ ok, probed, unanswered, txAt time.Duration }
	at := func(d time.Duration, zeroIsNone bool) time.Time {
		if d == 0 && zeroIsNone {
			return time.Time{}
		}
		return t0.Add(d)
	}
	for _, tc := range []struct {
		name    string
		times   times
		now     time.Duration // after t0
		due     bool
		healthy bool
	}{
		{"answered just now", times{ok: 0, probed: 0}, time.Second, false, true},
		{"probe sent 1 s ago", times{ok: -time.Minute, probed: 0}, time.Second, false, true},
		{"idle 5 s: no probe", times{probed: -time.Minute}, 5 * time.Second, false, true},
		{"idle 10 s: one probe", times{probed: -time.Minute}, 10 * time.Second, true, true},
		{"sending into silence for 2 s", times{probed: -time.Minute, txAt: time.Second}, 2 * time.Second, true, true},
		{"sent, but proof came after", times{ok: time.Second, probed: -time.Minute, txAt: time.Millisecond}, 2 * time.Second, false, true},
		{"unanswered: ask again every 2 s", times{probed: time.Second, unanswered: time.Second}, 3 * time.Second, true, true},
		{"unanswered 4.9 s: still healthy", times{probed: -time.Minute, unanswered: time.Millisecond}, 4901 * time.Millisecond, true, true},
		{"unanswered 5 s: dead", times{probed: -time.Minute, unanswered: time.Millisecond}, 5001 * time.Millisecond, true, false},
	} {
		p := &peer{path: PathDirect, direct: ep, directOK: at(tc.times.ok, false), lastDirectTx: at(tc.times.probed, false),
			unanswered: at(tc.times.unanswered, true), txAt: at(tc.times.txAt, true)}
		now := t0.Add(tc.now)
		if got := p.directProbeDue(now); got != tc.due {
			t.Errorf("%s: directProbeDue = %v, want %v", tc.name, got, tc.due)
		}
		if got := p.directHealthy(now); got != tc.healthy {
			t.Errorf("%s: directHealthy = %v, want %v", tc.name, got, tc.healthy)
		}
	}
}

// TestNoteTraffic: bytes received from the direct endpoint are proof the
// path works; bytes received through a relay or from elsewhere are not.
func TestNoteTraffic(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	ep := netip.MustParseAddrPort("198.18.1.2:51820")
	other := netip.MustParseAddrPort("198.18.1.9:51820")
	for _, tc := range []struct {
		name      string
		live      liveInfo
		wantProof bool
		wantTx    bool
	}{
		{"rx from the endpoint", liveInfo{endpoint: ep, rx: 100, tx: 70}, true, false},
		{"rx through a relay", liveInfo{endpoint: ep, relayed: true, rx: 100, tx: 70}, false, false},
		{"rx from another address", liveInfo{endpoint: other, rx: 100, tx: 70}, false, false},
		{"nothing new", liveInfo{endpoint: ep, rx: 50, tx: 70}, false, false},
		{"tx only", liveInfo{endpoint: ep, rx: 50, tx: 80}, false, true},
	} {
		p := &peer{path: PathDirect, direct: ep, rxSeen: 50, txSeen: 70, unanswered: t0}
		p.live.Store(&tc.live)
		now := t0.Add(time.Second)
		p.noteTraffic(now)
		if proof := p.directOK.Equal(now) && p.unanswered.IsZero(); proof != tc.wantProof {
			t.Errorf("%s: counted as proof = %v, want %v", tc.name, proof, tc.wantProof)
		}
		if tx := p.txAt.Equal(now); tx != tc.wantTx {
			t.Errorf("%s: tx noted = %v, want %v", tc.name, tx, tc.wantTx)
		}
	}
}
