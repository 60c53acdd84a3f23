package gossip

import (
	"sync"
	"time"
)

// replayWindow is how many sequence numbers below the newest one from an
// origin are still accepted (once each). A broadcast arrives by several
// paths (direct, relays, gossip retransmits) in any order; 1024 covers far
// more reordering than those paths produce.
const (
	replayWindow     = 1024
	replayWords      = replayWindow / 64
	maxReplayOrigins = 4096
)

// replayFilter deduplicates messages and rejects replays, IPsec style:
// per origin it keeps the newest epoch, the highest sequence number seen in
// it and a bitmap of the last replayWindow sequence numbers. Memory is
// bounded: one fixed-size entry per origin, at most maxReplayOrigins of them
// (the least recently heard origin is forgotten first).
//
// Epochs are origin boot times, so a restarted machine's messages replace
// the old boot's, and captured messages from an older boot are rejected. A
// machine whose clock went backwards across a restart would look older:
// rejoined(origin) is called when it is seen joining again (dead → alive)
// and lets one older epoch replace the current one. It does not reset the
// current epoch's window, so a member that merely flapped gets no duplicates
// through, and its next message in the current epoch withdraws the allowance.
type replayFilter struct {
	mu      sync.Mutex
	origins map[string]*replayState
}

type replayState struct {
	epoch uint64
	top   uint64 // highest sequence number seen in epoch
	bits  [replayWords]uint64
	used  time.Time
	// allowOlder: the origin rejoined and may have restarted with a clock
	// that went backwards; accept one older epoch as its new boot.
	allowOlder bool
	// retired is the epoch an older one replaced that way: late relays from
	// it must not flip the origin back.
	retired uint64
}

func newReplayFilter() *replayFilter {
	return &replayFilter{origins: make(map[string]*replayState)}
}

// accept reports whether (origin, epoch, seq) is new, and records it.
func (f *replayFilter) accept(origin string, epoch, seq uint64, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.origins[origin]
	if !ok {
		if len(f.origins) >= maxReplayOrigins {
			f.evictOldest()
		}
		s = &replayState{epoch: epoch, top: seq}
		s.set(seq)
		s.used = now
		f.origins[origin] = s
		return true
	}
	switch {
	case epoch < s.epoch && !s.allowOlder, epoch == s.retired && epoch != 0:
		return false
	case epoch != s.epoch:
		retired := s.retired
		if epoch < s.epoch {
			retired = s.epoch
		}
		*s = replayState{epoch: epoch, top: seq, retired: retired}
		s.set(seq)
	case seq > s.top:
		s.advance(seq)
		s.set(seq)
		s.allowOlder = false
	case s.top-seq >= replayWindow:
		return false
	case s.has(seq):
		return false
	default:
		s.set(seq)
	}
	s.used = now
	return true
}

// rejoined notes that origin came back from dead or left.
func (f *replayFilter) rejoined(origin string) {
	f.mu.Lock()
	if s, ok := f.origins[origin]; ok {
		s.allowOlder = true
	}
	f.mu.Unlock()
}

func (f *replayFilter) evictOldest() {
	var oldest string
	var when time.Time
	for o, s := range f.origins {
		if oldest == "" || s.used.Before(when) {
			oldest, when = o, s.used
		}
	}
	delete(f.origins, oldest)
}

// The bitmap is indexed by seq modulo the window; bits for sequence numbers
// that slide out of the window are cleared by advance.
func (s *replayState) set(seq uint64) {
	i := seq % replayWindow
	s.bits[i/64] |= 1 << (i % 64)
}

func (s *replayState) has(seq uint64) bool {
	i := seq % replayWindow
	return s.bits[i/64]&(1<<(i%64)) != 0
}

func (s *replayState) clear(seq uint64) {
	i := seq % replayWindow
	s.bits[i/64] &^= 1 << (i % 64)
}

// advance moves the window's top to seq, clearing the slots of the
// sequence numbers in (top, seq] that it reuses.
func (s *replayState) advance(seq uint64) {
	if seq-s.top >= replayWindow {
		s.bits = [replayWords]uint64{}
	} else {
		for q := s.top + 1; q <= seq; q++ {
			s.clear(q)
		}
	}
	s.top = seq
}
