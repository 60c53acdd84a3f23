package agent

import (
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

func TestHeardLog(t *testing.T) {
	t0 := time.Now()
	var k tun.Key
	k[0] = 1
	status := func(rx uint64, hs time.Time) []tun.PeerStatus {
		return []tun.PeerStatus{{Peer: tun.Peer{PublicKey: k}, RxBytes: rx, LastHandshake: hs}}
	}
	h := newHeardLog()
	var k2 tun.Key
	k2[0] = 2
	// First sight of a peer with traffic already: its handshake is the
	// only evidence of when.
	if got := h.update([]tun.PeerStatus{{Peer: tun.Peer{PublicKey: k2}, RxBytes: 92, LastHandshake: t0.Add(-time.Second)}}, t0)[k2]; !got.Equal(t0.Add(-time.Second)) {
		t.Errorf("first sight after a handshake: heard at %v, want the handshake", got.Sub(t0))
	}
	for _, step := range []struct {
		name  string
		at    time.Duration
		peers []tun.PeerStatus
		want  time.Duration // heard at, from t0; -1: never
	}{
		{"first sight, no handshake: never heard", 0, status(0, time.Time{}), -1},
		{"counter rose with a handshake: heard at the reading", 2 * time.Second, status(148, t0.Add(time.Second)), 2 * time.Second},
		{"counter rose: heard at the reading", 3 * time.Second, status(500, t0.Add(time.Second)), 3 * time.Second},
		{"counter still: nothing new", 9 * time.Second, status(500, t0.Add(time.Second)), 3 * time.Second},
		{"counter went down (peer re-added): nothing received", 10 * time.Second, status(32, t0.Add(time.Second)), 3 * time.Second},
		{"a handshake from the future is ignored", 11 * time.Second, status(32, t0.Add(time.Minute)), 3 * time.Second},
		{"rose again", 12 * time.Second, status(64, t0.Add(time.Second)), 12 * time.Second},
	} {
		got := h.update(step.peers, t0.Add(step.at))[k]
		want := time.Time{}
		if step.want >= 0 {
			want = t0.Add(step.want)
		}
		if !got.Equal(want) {
			t.Errorf("%s: heard at %v, want %v", step.name, got.Sub(t0), want.Sub(t0))
		}
	}
	if got := h.update(nil, t0.Add(13*time.Second)); len(got) != 0 || len(h.peers) != 0 {
		t.Errorf("a peer no longer configured is remembered: %v", h.peers)
	}
}

// TestPingDue: a peer whose direct path the NAT layer probes (answered
// every 2–2.25 s) is not pinged in the gap before its next answer, yet
// still twice before it counts as silent; any other peer after 2 s.
func TestPingDue(t *testing.T) {
	for _, tc := range []struct {
		silence time.Duration
		probed  bool
		want    bool
	}{
		{1900 * time.Millisecond, false, false},
		{2 * time.Second, false, true},
		{2300 * time.Millisecond, true, false}, // between a probe's due time and its answer
		{2900 * time.Millisecond, true, false},
		{3 * time.Second, true, true},
		{silentAfter - reachCheck, true, true}, // the second check before silentAfter still pings
	} {
		if got := pingDue(tc.silence, tc.probed); got != tc.want {
			t.Errorf("pingDue(%v, probed %v) = %v, want %v", tc.silence, tc.probed, got, tc.want)
		}
	}
}
