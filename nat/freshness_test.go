package nat

import (
	"testing"
	"time"
)

// TestSeqCounter: sequence numbers strictly increase, carry the second
// they were sealed in, and stay monotonic when the clock steps back.
func TestSeqCounter(t *testing.T) {
	var c seqCounter
	t0 := time.Unix(1_800_000_000, 0)
	a, b := c.next(t0), c.next(t0)
	if a>>32 != uint64(t0.Unix()) || b != a+1 {
		t.Fatalf("same second: %x then %x, want second %d and a step of one", a, b, t0.Unix())
	}
	n := c.next(t0.Add(3 * time.Second))
	if n != uint64(t0.Unix()+3)<<32 {
		t.Fatalf("three seconds later: %x, want the new second with count 0", n)
	}
	if back := c.next(t0); back <= n {
		t.Fatalf("clock stepped back: %x after %x, want it still increasing", back, n)
	}
}

// TestReplayWindow: each sequence number passes once; copies, numbers
// from before the previous second and numbers outside the clock window
// do not; packets reordered across a second boundary still pass.
func TestReplayWindow(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	sec := func(d int64, n uint64) uint64 { return uint64(now.Unix()+d)<<32 | n }
	var w replayWindow
	steps := []struct {
		name string
		seq  uint64
		want freshness
	}{
		{"first", sec(0, 0), fresh},
		{"next", sec(0, 1), fresh},
		{"copy of the first", sec(0, 0), replayed},
		{"reordered within the second", sec(0, 5), fresh},
		{"gap filled late", sec(0, 3), fresh},
		{"next second", sec(1, 0), fresh},
		{"late packet of the previous second", sec(0, 4), fresh},
		{"its copy", sec(0, 4), replayed},
		{"copy from the previous second", sec(0, 1), replayed},
		{"two seconds on", sec(3, 0), fresh},
		{"older than the previous second", sec(0, 9), replayed},
		{"sealed 31 s ago", sec(-31, 7), stale},
		{"sealed 31 s ahead", sec(31, 7), stale},
		{"far behind the window in one second", sec(3, 20000), fresh},
		{"8200 behind", sec(3, 20000-8200), replayed},
	}
	for _, s := range steps {
		if got := w.check(s.seq, now); got != s.want {
			t.Errorf("%s (%x): %v, want %v", s.name, s.seq, got, s.want)
		}
	}
}

// TestRelayBudgetUnit: relay_mbps is megabits per second.
func TestRelayBudgetUnit(t *testing.T) {
	for _, tc := range []struct {
		mbps float64
		want float64 // bytes per second
	}{
		{8, 1_000_000},
		{100, 12_500_000},
		{DefaultRelayMbps, 25_000_000},
		{0.008, 1000},
	} {
		if got := relayBytesPerSecond(tc.mbps); got != tc.want {
			t.Errorf("%g Mbit/s = %g bytes/s, want %g", tc.mbps, got, tc.want)
		}
	}
}
