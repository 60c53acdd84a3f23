package gossip

import (
	"sync"
	"sync/atomic"

	"github.com/hashicorp/memberlist"
)

const (
	// relayRetransmitMult: each queued message is sent
	// relayRetransmitMult × ceil(log10(N+1)) times by every machine that
	// queues it, each time to a random member. The origin also sends it
	// straight to every member and every receiver re-queues it, so gossip
	// is the backup path: with 3, a member the direct packet missed is
	// still missed by all 60 gossip sends at 10 machines with probability
	// (8/9)^60 ≈ 0.1 % (with 2 it was ≈ 1 %, seen in tests). Coalescing by
	// name bounds the cost under a write burst: a newer message replaces a
	// queued older one instead of adding to it.
	relayRetransmitMult = 3

	// maxQueued caps the gossip queue. A lone machine never gossips, so
	// memberlist never drains its queue; names coalesce repeats, but a
	// stream of distinct keys would grow it without bound. When over the
	// cap the most-transmitted (oldest) entries go first; anti-entropy
	// repairs what they would have carried.
	maxQueued = 256
)

// gossipQueue is the queue of user broadcasts memberlist piggybacks on its
// packets. Entries are named (origin, topic, key): a newer message with the
// same name replaces the queued one, so a newer head set covers an older one.
type gossipQueue struct {
	q      memberlist.TransmitLimitedQueue
	pruned *atomic.Uint64

	// mu serialises queueing so that an older message (relays arrive in
	// any order) never replaces a newer queued one with the same name.
	mu     sync.Mutex
	latest map[string]*queuedMsg
}

func newGossipQueue(numNodes func() int, pruned *atomic.Uint64) *gossipQueue {
	return &gossipQueue{
		q:      memberlist.TransmitLimitedQueue{NumNodes: numNodes, RetransmitMult: relayRetransmitMult},
		pruned: pruned,
		latest: make(map[string]*queuedMsg),
	}
}

// queuedMsg is one entry; memberlist calls Finished (under its queue lock)
// when it is sent enough times, replaced or pruned.
type queuedMsg struct {
	name       string
	epoch, seq uint64
	msg        []byte
	done       atomic.Bool
}

func (m *queuedMsg) Name() string    { return m.name }
func (m *queuedMsg) Message() []byte { return m.msg }
func (m *queuedMsg) Finished()       { m.done.Store(true) }
func (m *queuedMsg) Invalidates(b memberlist.Broadcast) bool {
	o, ok := b.(*queuedMsg)
	return ok && o.name == m.name
}

func queueName(origin, topic, key string) string {
	return origin + "\x00" + topic + "\x00" + key
}

// push queues an encoded message unless a newer one with the same name is
// already queued.
func (g *gossipQueue) push(m *message, raw []byte) {
	qm := &queuedMsg{name: queueName(m.origin, m.topic, m.key), epoch: m.epoch, seq: m.seq, msg: raw}
	g.mu.Lock()
	defer g.mu.Unlock()
	if cur, ok := g.latest[qm.name]; ok && !cur.done.Load() &&
		(cur.epoch > qm.epoch || (cur.epoch == qm.epoch && cur.seq >= qm.seq)) {
		return
	}
	g.latest[qm.name] = qm
	g.q.QueueBroadcast(qm)
	if n := g.q.NumQueued(); n > maxQueued {
		g.q.Prune(maxQueued)
		g.pruned.Add(uint64(n - maxQueued))
	}
	if len(g.latest) > 2*maxQueued {
		for name, e := range g.latest {
			if e.done.Load() {
				delete(g.latest, name)
			}
		}
	}
}

// get hands memberlist what fits in limit bytes.
func (g *gossipQueue) get(overhead, limit int) [][]byte {
	return g.q.GetBroadcasts(overhead, limit)
}

func (g *gossipQueue) len() int { return g.q.NumQueued() }

// reset drops everything (on Close).
func (g *gossipQueue) reset() { g.q.Reset() }
