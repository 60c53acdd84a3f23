package nat

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/replay"
)

// Relay packets carry a 64-bit sequence number under their MAC, so that a
// captured packet cannot be replayed, from any address, now or later:
//
//	seq = unix seconds << 32 | count within that second
//
// The sender of each hop (the machine that seals it) keeps one such number
// per receiving machine and makes it strictly increase:
// next = max(last+1, now<<32). So the high half is the second the packet
// was sealed in (a timestamp the receiver checks against its clock, which
// makes a replay after a restart of the receiver stale), and within a
// second the low half is dense (which WireGuard's sliding-window replay
// filter needs). A sender that restarts starts at the new second, above
// everything it sent before; within the same second its first packets
// look like replays until the next second begins, a loss of under a
// second on restart.
//
// The receiver keeps, per sealing machine, a replay filter (RFC 6479, the
// one wireguard-go uses, 8128 packets wide) for the current second and one
// for the previous second, so packets reordered across a second boundary
// still pass: 2 KiB per peer, bounded by the peer set.

// maxRelaySkew bounds how far a relay packet's second may be from the
// receiver's clock; the authenticated probes accept the same skew.
const maxRelaySkew = maxClockSkew

// seqCounter is the sending side: the last sequence number sealed for one
// receiving machine.
type seqCounter struct{ last atomic.Uint64 }

// next returns a sequence number above every earlier one, whose high half
// is now's second (or later, if the clock stepped back: monotonic first).
func (c *seqCounter) next(now time.Time) uint64 {
	floor := uint64(now.Unix()) << 32
	for {
		last := c.last.Load()
		n := max(last+1, floor)
		if c.last.CompareAndSwap(last, n) {
			return n
		}
	}
}

// freshness is a relay packet's verdict.
type freshness uint8

const (
	fresh    freshness = iota
	stale              // sealed outside the accepted window of the clock
	replayed           // seen before, or older than the replay window
)

// replayWindow is the receiving side, per sealing machine.
type replayWindow struct {
	mu          sync.Mutex
	curSec      uint32
	prevSec     uint32
	cur, prev   replay.Filter
	everRotated bool
}

// check accepts seq once, if it is fresh.
func (w *replayWindow) check(seq uint64, now time.Time) freshness {
	sec, n := uint32(seq>>32), seq&0xFFFFFFFF
	if d := int64(sec) - now.Unix(); d > int64(maxRelaySkew/time.Second) || d < -int64(maxRelaySkew/time.Second) {
		return stale
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var f *replay.Filter
	switch {
	case sec == w.curSec && w.everRotated:
		f = &w.cur
	case sec > w.curSec || !w.everRotated:
		// A new second: the current window becomes the previous one.
		w.prev, w.prevSec = w.cur, w.curSec
		w.cur.Reset()
		w.curSec, w.everRotated = sec, true
		f = &w.cur
	case sec == w.prevSec:
		f = &w.prev
	default:
		return replayed // older than the previous second
	}
	if !f.ValidateCounter(n, 1<<32) {
		return replayed
	}
	return fresh
}
