package agent

import (
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

// Hearing a peer: WireGuard's own receive activity as liveness evidence.
//
// Every packet WireGuard authenticates from a peer (data, keepalive,
// handshake) raises its receive counter, whatever the path (direct or
// through a relay). So "the counter rose within silentAfter" is proof
// that the peer reaches this machine now, with no false positives: a
// packet that decrypts came from the peer. The NAT layer's authenticated
// probes of a direct path (every 2 s, by one end for both: answered, or
// echoing this machine's last answer, by the peer's own process with a key
// of this pair; nat/echo.go) count too, so an idle direct peer costs
// nothing more. Silence alone proves nothing on an idle relayed link
// (keepalives are 25 s apart), so a peer silent for pingAfter gets a
// gossip ping each check; its answer is received traffic. A peer silent
// for silentAfter despite those pings is unreachable from here.
const (
	// pingAfter: the silence after which the peer is pinged, every
	// reachCheck, until it is heard again. At idle each pair exchanges a
	// ping every few seconds: two ~150-byte datagrams.
	pingAfter = 2 * time.Second
	// silentAfter: the silence (two pings or more unanswered) after which
	// a peer is unreachable. It bounds detection to ≈ silentAfter plus one
	// reachCheck; a machine loaded enough to drop three pings in a row
	// for five seconds is in no state to serve its peers either.
	silentAfter = 5 * time.Second
	// pingAfterProbed replaces pingAfter for a peer whose direct path the
	// NAT layer probes every 2 s: its answers come 2–2.25 s apart (the
	// loop ticks every 250 ms), so a 2 s threshold pinged it at every
	// check that fell between a probe's due time and its answer, a gossip
	// round trip for nothing. Two checks still ping it before silentAfter.
	pingAfterProbed = 3 * time.Second
)

// pingDue reports whether a peer silent this long is pinged; probed: the
// NAT layer probes its direct path.
func pingDue(silence time.Duration, probed bool) bool {
	if probed {
		return silence >= pingAfterProbed
	}
	return silence >= pingAfter
}

// heardLog remembers, per WireGuard peer, its receive counter and when it
// was last seen to rise (or the last handshake, if later).
type heardLog struct {
	mu    sync.Mutex
	peers map[tun.Key]heard
}

type heard struct {
	rx uint64
	at time.Time
}

func newHeardLog() *heardLog { return &heardLog{peers: map[tun.Key]heard{}} }

// update takes one reading of WireGuard's peers and returns when each was
// last heard. Peers no longer configured are forgotten.
func (h *heardLog) update(peers []tun.PeerStatus, now time.Time) map[tun.Key]time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[tun.Key]time.Time, len(peers))
	next := make(map[tun.Key]heard, len(peers))
	for _, p := range peers {
		prev, seen := h.peers[p.PublicKey]
		cur := heard{rx: p.RxBytes, at: prev.at}
		// A counter that went down is a peer removed and added again:
		// nothing was received for that.
		if seen && p.RxBytes > prev.rx {
			cur.at = now
		}
		// A handshake is received traffic too; on first sight it is the
		// only evidence of when the counter last rose.
		if p.LastHandshake.After(cur.at) && !p.LastHandshake.After(now) {
			cur.at = p.LastHandshake
		}
		next[p.PublicKey] = cur
		out[p.PublicKey] = cur.at
	}
	h.peers = next
	return out
}
