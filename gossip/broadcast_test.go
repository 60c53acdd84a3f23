package gossip

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/internal/testkit"
)

// inbox records what a node's handler received.
type inbox struct {
	mu   sync.Mutex
	got  map[string][][]byte // from → payloads
	when []time.Duration     // delivery latencies, from a timestamp in the payload
}

func subscribe(n *Node, topic string) *inbox {
	in := &inbox{got: make(map[string][][]byte)}
	n.Subscribe(topic, func(from string, payload []byte) {
		now := time.Now()
		in.mu.Lock()
		defer in.mu.Unlock()
		in.got[from] = append(in.got[from], payload)
		if len(payload) >= 8 {
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(payload)))
			in.when = append(in.when, now.Sub(sent))
		}
	})
	return in
}

func (in *inbox) count(from string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.got[from])
}

func (in *inbox) total() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	t := 0
	for _, p := range in.got {
		t += len(p)
	}
	return t
}

func stamped(i int, size int) []byte {
	p := make([]byte, max(size, 16))
	rand.Read(p) // incompressible: memberlist compresses packets when that helps
	binary.BigEndian.PutUint64(p, uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint64(p[8:], uint64(i))
	return p
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func TestBroadcastTenNodes(t *testing.T) {
	const size, perNode = 10, 5
	nodes := startCluster(t, size, nil)
	waitFor(t, 10*time.Second, "cluster of 10", func() bool { return converged(nodes, size) })
	inboxes := make([]*inbox, size)
	for i, n := range nodes {
		inboxes[i] = subscribe(n, "t")
	}
	// Every node broadcasts perNode messages with distinct keys, so
	// nothing is coalesced; payload sizes straddle the packet limit's
	// neighbourhood to exercise the packet budget (all still fit).
	for round := range perNode {
		for i, n := range nodes {
			payload := stamped(round, 200+round*250) // 200 … 1200 bytes
			if err := n.Broadcast("t", fmt.Sprintf("k%d", round), payload); err != nil {
				t.Fatalf("Broadcast: %v", err)
			}
			_ = i
		}
		// Pacing, not a wait: rounds a gossip interval apart, so the
		// queue holds a few rounds at once rather than all of them.
		time.Sleep(20 * time.Millisecond)
	}
	want := (size - 1) * perNode
	all := func() bool {
		for _, in := range inboxes {
			if in.total() < want {
				return false
			}
		}
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout(5*time.Second))
	defer cancel()
	if _, err := testkit.Poll(ctx, "every broadcast everywhere", func() error {
		if !all() {
			return fmt.Errorf("not yet")
		}
		return nil
	}); err != nil {
		for i, n := range nodes {
			t.Logf("%s: %d/%d delivered, members %s, stats %+v", n.LocalName(), inboxes[i].total(), want, names(n.Members()), n.Stats())
		}
		t.Fatalf("not every broadcast reached every node within %v", testkit.Timeout(5*time.Second))
	}
	var lat []time.Duration
	for i, in := range inboxes {
		for j, n := range nodes {
			if i == j {
				continue
			}
			if c := in.count(n.LocalName()); c != perNode {
				t.Errorf("%s got %d messages from %s, want exactly %d (no duplicates)", nodes[i].LocalName(), c, n.LocalName(), perNode)
			}
		}
		in.mu.Lock()
		lat = append(lat, in.when...)
		in.mu.Unlock()
	}
	t.Logf("10 nodes, %d deliveries: p50 %v, p99 %v, max %v", len(lat),
		percentile(lat, 0.50).Round(time.Microsecond), percentile(lat, 0.99).Round(time.Microsecond), percentile(lat, 1).Round(time.Microsecond))
	if p99 := percentile(lat, 0.99); p99 > 5*time.Second {
		t.Errorf("p99 delivery %v over the 5 s bound", p99)
	}
	for _, n := range nodes {
		if st := n.Stats(); st.MaxPacket > MaxWirePacket {
			t.Errorf("%s wrote a %d-byte packet, limit %d", n.LocalName(), st.MaxPacket, MaxWirePacket)
		}
	}
}

func TestPacketBudgetAtTheLimit(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	waitFor(t, 5*time.Second, "cluster of 3", func() bool { return converged(nodes, 3) })
	subscribe(nodes[2], "t")
	in := subscribe(nodes[1], "t")
	// The largest payload whose envelope still fits a packet, and one byte
	// more (which takes the stream path).
	env := message{kind: kindBroadcast, origin: nodes[0].LocalName(), seq: 1, topic: "t", key: "k"}
	fit := maxPacketMsg - encodedLen(&env)
	for _, size := range []int{fit, fit + 1} {
		payload := make([]byte, size)
		rand.Read(payload)
		if err := nodes[0].Broadcast("t", "k", payload); err != nil {
			t.Fatalf("Broadcast %d bytes: %v", size, err)
		}
	}
	waitFor(t, 5*time.Second, "both sizes delivered", func() bool { return in.count(nodes[0].LocalName()) == 2 })
	// The packet-sized one is relayed: every node, not only the origin,
	// writes a packet of at least maxPacketMsg bytes.
	waitFor(t, 5*time.Second, "every node wrote a full-size packet", func() bool {
		for _, n := range nodes {
			if n.Stats().MaxPacket < maxPacketMsg {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		if st := n.Stats(); st.MaxPacket > MaxWirePacket || st.MaxPacket < maxPacketMsg {
			t.Errorf("%s: largest packet %d bytes, want between %d and %d", n.LocalName(), st.MaxPacket, maxPacketMsg, MaxWirePacket)
		}
	}
}

func TestLargePayloadReachesEveryMember(t *testing.T) {
	const size = 5
	nodes := startCluster(t, size, nil)
	waitFor(t, 5*time.Second, "cluster of 5", func() bool { return converged(nodes, size) })
	inboxes := make([]*inbox, size)
	for i, n := range nodes {
		inboxes[i] = subscribe(n, "big")
	}
	big := stamped(0, 64<<10)
	for i := 16; i < len(big); i++ {
		big[i] = byte(i * 7)
	}
	if err := nodes[0].Broadcast("big", "blob", big); err != nil {
		t.Fatalf("Broadcast 64 KiB: %v", err)
	}
	if q := nodes[0].Stats().Queued; q != 0 {
		t.Errorf("a 64 KiB broadcast was put in the gossip queue (%d queued)", q)
	}
	waitFor(t, 5*time.Second, "64 KiB everywhere", func() bool {
		for _, in := range inboxes[1:] {
			if in.count(nodes[0].LocalName()) != 1 {
				return false
			}
		}
		return true
	})
	for i, in := range inboxes[1:] {
		in.mu.Lock()
		if !bytes.Equal(in.got[nodes[0].LocalName()][0], big) {
			t.Errorf("%s received a corrupted 64 KiB payload", nodes[i+1].LocalName())
		}
		in.mu.Unlock()
	}

	// SendTo: point to point, any size.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[1].SendTo(ctx, nodes[2].LocalName(), "big", big); err != nil {
		t.Fatalf("SendTo: %v", err)
	}
	waitFor(t, 5*time.Second, "SendTo delivered", func() bool { return inboxes[2].count(nodes[1].LocalName()) == 1 })
	if inboxes[3].count(nodes[1].LocalName()) != 0 {
		t.Errorf("SendTo reached a member it was not addressed to")
	}
	if err := nodes[1].SendTo(ctx, "nobody", "big", big); err == nil {
		t.Errorf("SendTo an unknown member succeeded")
	}
	if err := nodes[1].SendTo(ctx, nodes[2].LocalName(), "_left", nil); err == nil {
		t.Errorf("SendTo on a reserved topic succeeded")
	}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if err := nodes[1].SendTo(done, nodes[2].LocalName(), "big", big); err == nil {
		// The send may win the race with the cancelled context; that is
		// fine, but it must not hang.
		t.Logf("SendTo with a cancelled context completed anyway")
	}
}

// TestRelayReachesMemberOriginCannotReach: the origin cannot send to one
// member at all; the others' re-gossip must carry the broadcast there.
func TestRelayReachesMemberOriginCannotReach(t *testing.T) {
	inMemory(t, func(t *testing.T, onMemNet func(int, *Config)) {
		filter, wrap := newFilter()
		nodes := startCluster(t, 4, func(i int, c *Config) {
			onMemNet(i, c)
			if i == 0 {
				c.wrapTransport = wrap
			}
		})
		waitFor(t, 5*time.Second, "cluster of 4", func() bool { return converged(nodes, 4) })
		// Every machine runs the same topics: one that has no handler for a
		// topic rejects its messages and so does not relay them either.
		for _, n := range nodes[:3] {
			subscribe(n, "t")
		}
		in := subscribe(nodes[3], "t")
		filter.block(nodes[3].Addr())
		for i := range 5 {
			if err := nodes[0].Broadcast("t", fmt.Sprintf("k%d", i), stamped(i, 32)); err != nil {
				t.Fatalf("Broadcast: %v", err)
			}
		}
		// Relays ride on gossip rounds, on the bubble's virtual clock: a
		// loaded machine cannot stretch them; the bound is protocol time.
		waitFor(t, 15*time.Second, "relayed broadcasts", func() bool { return in.count(nodes[0].LocalName()) == 5 })
		var relayed uint64
		for _, n := range nodes[1:] {
			relayed += n.Stats().Relayed
		}
		if relayed == 0 {
			t.Errorf("nothing was relayed")
		}
	})
}

func TestLoneNodeQueueIsBounded(t *testing.T) {
	n := startNode(t, testConfig(t, 0))
	for i := range 50 {
		if err := n.Broadcast("t", "same", stamped(i, 16)); err != nil {
			t.Fatal(err)
		}
	}
	if q := n.Stats().Queued; q != 1 {
		t.Errorf("50 broadcasts with one key left %d queued, want 1 (coalesced)", q)
	}
	for i := range 5000 {
		if err := n.Broadcast("t", fmt.Sprintf("k%d", i), stamped(i, 16)); err != nil {
			t.Fatal(err)
		}
	}
	st := n.Stats()
	if st.Queued > maxQueued {
		t.Errorf("lone node queued %d broadcasts, cap %d", st.Queued, maxQueued)
	}
	if st.QueuePruned == 0 {
		t.Errorf("no pruning counted")
	}
	if len(n.queue.latest) > 2*maxQueued+1 {
		t.Errorf("coalescing index holds %d names, want ≤ %d", len(n.queue.latest), 2*maxQueued+1)
	}
}

func TestBroadcastRejectsBadArguments(t *testing.T) {
	n := startNode(t, testConfig(t, 0))
	tests := []struct {
		name, topic, key string
		size             int
	}{
		{"empty topic", "", "k", 1},
		{"long topic", string(make([]byte, MaxTopicLen+1)), "k", 1},
		{"reserved topic", "_left", "", 1},
		{"long key", "t", string(make([]byte, MaxKeyLen+1)), 1},
		{"payload too large", "t", "k", MaxPayload + 1},
	}
	for _, tt := range tests {
		if err := n.Broadcast(tt.topic, tt.key, make([]byte, tt.size)); err == nil {
			t.Errorf("%s: Broadcast accepted it", tt.name)
		}
	}
}
