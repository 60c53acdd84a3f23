package gossip

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

func TestClusterFormsAndSeesMeta(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d nodes", size), func(t *testing.T) {
			nodes := startCluster(t, size, func(i int, c *Config) {
				c.Meta = []byte(fmt.Sprintf("meta-%d", i))
			})
			waitFor(t, 5*time.Second, "all nodes see each other", func() bool { return converged(nodes, size) })
			for _, n := range nodes {
				for i, m := range n.Members() {
					if m.Name != nodes[i].LocalName() || m.Addr != nodes[i].Addr() || m.State != Alive {
						t.Errorf("%s sees member %d as %+v, want %s at %s alive", n.LocalName(), i, m, nodes[i].LocalName(), nodes[i].Addr())
					}
					if want := fmt.Sprintf("meta-%d", i); string(m.Meta) != want {
						t.Errorf("%s sees %s meta %q, want %q", n.LocalName(), m.Name, m.Meta, want)
					}
				}
			}

			// Metadata changes propagate as an Update event.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			newMeta := []byte("changed")
			if err := nodes[1].SetMeta(ctx, newMeta); err != nil {
				t.Fatalf("SetMeta: %v", err)
			}
			for _, n := range nodes {
				if n == nodes[1] {
					continue
				}
				waitEvent(t, n, 5*time.Second, func(e Event) bool {
					return e.Kind == Update && e.Member.Name == nodes[1].LocalName() && bytes.Equal(e.Member.Meta, newMeta)
				})
			}
		})
	}
}

// waitEvent reads n's events until match returns true.
func waitEvent(t *testing.T, n *Node, timeout time.Duration, match func(Event) bool) Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-n.Events():
			if !ok {
				t.Fatalf("%s: events closed", n.LocalName())
			}
			if match(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("%s: no matching event within %v", n.LocalName(), timeout)
		}
	}
}

func TestFailureDetection(t *testing.T) {
	tests := []struct {
		name      string
		stop      func(n *Node) error
		wantState MemberState
	}{
		{"close is detected dead", func(n *Node) error { return n.Close() }, Dead},
		{"leave is seen as left", func(n *Node) error {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := n.Leave(ctx); err != nil {
				return err
			}
			return n.Close()
		}, Left},
	}
	for _, tt := range tests {
		// On memNet in a synctest bubble: the probe and suspicion timers
		// that detect the failure run on virtual time.
		t.Run(tt.name, func(t *testing.T) {
			inMemory(t, func(t *testing.T, onMemNet func(int, *Config)) {
				nodes := startCluster(t, 4, onMemNet)
				waitFor(t, 5*time.Second, "cluster of 4", func() bool { return converged(nodes, 4) })
				victim := nodes[3]
				start := time.Now()
				if err := tt.stop(victim); err != nil {
					t.Fatalf("stop: %v", err)
				}
				// Probe 200 ms, suspicion 2×max(1,log10 4)×200 ms = 400 ms (up to
				// 4× that unconfirmed): seconds at most; 10 s is the failure bound.
				for _, n := range nodes[:3] {
					e := waitEvent(t, n, 10*time.Second, func(e Event) bool {
						return e.Kind == Leave && e.Member.Name == victim.LocalName()
					})
					if e.Member.State != tt.wantState {
						t.Errorf("%s saw %s as %v, want %v", n.LocalName(), victim.LocalName(), e.Member.State, tt.wantState)
					}
				}
				t.Logf("%s: all survivors noticed within %v", tt.name, time.Since(start).Round(time.Millisecond))
				for _, n := range nodes[:3] {
					if got := len(n.Members()); got != 3 {
						t.Errorf("%s has %d members (%s), want 3", n.LocalName(), got, names(n.Members()))
					}
				}
			})
		})
	}
}

func TestConfigValidation(t *testing.T) {
	good := testConfig(t, 0)
	tests := []struct {
		name   string
		mutate func(c *Config)
	}{
		{"no name", func(c *Config) { c.Name = "" }},
		{"slash in name", func(c *Config) { c.Name = "a/b" }},
		{"no bind address", func(c *Config) { c.BindAddr = netip.AddrPort{} }},
		{"no keys", func(c *Config) { c.Keys = nil }},
		{"bad key length", func(c *Config) { c.Keys = [][]byte{[]byte("short")} }},
		{"meta too large", func(c *Config) { c.Meta = make([]byte, MaxMetaSize+1) }},
		{"negative rejoin", func(c *Config) { c.RejoinInterval = -time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			n, err := New(context.Background(), c)
			if err == nil {
				n.Close()
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}

func TestSetMetaTooLarge(t *testing.T) {
	n := startNode(t, testConfig(t, 0))
	if err := n.SetMeta(context.Background(), make([]byte, MaxMetaSize+1)); err == nil {
		t.Fatal("SetMeta accepted oversize metadata")
	}
}

func TestClosedNode(t *testing.T) {
	n := startNode(t, testConfig(t, 0))
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := n.Broadcast("t", "k", nil); err != ErrClosed {
		t.Errorf("Broadcast after Close = %v, want ErrClosed", err)
	}
	if err := n.Leave(context.Background()); err != ErrClosed {
		t.Errorf("Leave after Close = %v, want ErrClosed", err)
	}
	if _, ok := <-n.Events(); ok {
		// drain: events queued before Close are still readable
		for range n.Events() {
		}
	}
}

func TestEventsDropOldest(t *testing.T) {
	var dropped atomic.Uint64
	q := newEventQueue(&dropped)
	const extra = 10
	for i := range eventBuffer + extra {
		q.push(Event{Kind: Update, Member: Member{Name: fmt.Sprint(i)}})
	}
	if dropped.Load() != extra {
		t.Errorf("dropped %d, want %d", dropped.Load(), extra)
	}
	if first := <-q.ch; first.Member.Name != fmt.Sprint(extra) {
		t.Errorf("oldest kept event is %s, want %d (the oldest dropped first)", first.Member.Name, extra)
	}
	q.close()
	q.push(Event{}) // after close: ignored, no panic
}
