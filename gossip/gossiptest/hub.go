package gossiptest

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Hub is an IN-MEMORY STAND-IN FOR PACKAGE gossip, for the tests of the
// packages that consume gossip (crdt's replicas, the agent's parts): it
// connects N machines in one process, delivers
// broadcasts to every connected node (asynchronously, in order per sender),
// runs push/pull anti-entropy between random connected pairs, and can
// partition and heal. Package gossip has its own tests over real memberlist;
// the consumers test themselves, not the transport.
type Hub struct {
	mu    sync.Mutex
	nodes map[string]*Node
	group map[string]int // partition group; nodes talk only within a group
	down  map[string]bool
	stop  chan struct{}
	wg    sync.WaitGroup
}

// NewHub starts a hub that runs a push/pull between random connected
// pairs every pushPull.
func NewHub(pushPull time.Duration) *Hub {
	h := &Hub{nodes: map[string]*Node{}, group: map[string]int{}, down: map[string]bool{}, stop: make(chan struct{})}
	h.wg.Add(1)
	go h.antiEntropy(pushPull)
	return h
}

// Close stops anti-entropy and every node.
func (h *Hub) Close() {
	close(h.stop)
	h.wg.Wait()
	h.mu.Lock()
	for _, n := range h.nodes {
		n.close()
	}
	h.mu.Unlock()
}

// Node returns (creating if needed) the Gossip of machine name. A node
// re-created after SetDown(name, false) starts with fresh subscriptions.
func (h *Hub) Node(name string) *Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.nodes[name]; ok {
		old.close()
	}
	n := &Node{hub: h, name: name, subs: map[string]func(string, []byte){}, locals: map[string]func() []byte{}, merges: map[string]func(string, []byte){}, signal: make(chan struct{}, 1), done: make(chan struct{})}
	h.nodes[name] = n
	go n.deliver()
	return n
}

// Partition puts each list of names in its own group.
func (h *Hub) Partition(groups ...[]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, g := range groups {
		for _, n := range g {
			h.group[n] = i + 1
		}
	}
}

// Heal ends every partition.
func (h *Hub) Heal() {
	h.mu.Lock()
	clear(h.group)
	h.mu.Unlock()
}

// SetDown marks a machine offline: nothing is delivered to or from it.
func (h *Hub) SetDown(name string, down bool) {
	h.mu.Lock()
	h.down[name] = down
	h.mu.Unlock()
}

// Connected says whether a and b can talk now.
func (h *Hub) Connected(a, b string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connectedLocked(a, b)
}

func (h *Hub) connectedLocked(a, b string) bool {
	return a != b && !h.down[a] && !h.down[b] && h.group[a] == h.group[b]
}

// Inject delivers a payload on topic to node "to" as if sent by "from" (for
// tests of hostile input).
func (h *Hub) Inject(to, topic, from string, payload []byte) {
	h.mu.Lock()
	n := h.nodes[to]
	h.mu.Unlock()
	n.enqueue(message{topic: topic, from: from, payload: payload})
}

func (h *Hub) antiEntropy(every time.Duration) {
	defer h.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		h.mu.Lock()
		var names []string
		for name := range h.nodes {
			names = append(names, name)
		}
		type pair struct{ a, b *Node }
		var pairs []pair
		for _, a := range names {
			b := names[rand.IntN(len(names))]
			if h.connectedLocked(a, b) {
				pairs = append(pairs, pair{h.nodes[a], h.nodes[b]})
			}
		}
		h.mu.Unlock()
		for _, p := range pairs {
			p.a.pushPull(p.b)
		}
	}
}

type message struct {
	topic, from string
	payload     []byte
	merge       bool // a push/pull state rather than a broadcast
}

// Node is one machine's view of the hub; it satisfies crdt.Gossip.
type Node struct {
	hub  *Hub
	name string

	mu     sync.Mutex
	subs   map[string]func(string, []byte)
	locals map[string]func() []byte
	merges map[string]func(string, []byte)
	queue  []message
	signal chan struct{}
	done   chan struct{}
	once   sync.Once
}

func (n *Node) LocalName() string { return n.name }

func (n *Node) Broadcast(topic, key string, payload []byte) error {
	n.hub.mu.Lock()
	var to []*Node
	for name, m := range n.hub.nodes {
		if n.hub.connectedLocked(n.name, name) {
			to = append(to, m)
		}
	}
	n.hub.mu.Unlock()
	for _, m := range to {
		m.enqueue(message{topic: topic, from: n.name, payload: payload})
	}
	return nil
}

func (n *Node) Subscribe(topic string, handler func(from string, payload []byte)) {
	n.mu.Lock()
	n.subs[topic] = handler
	n.mu.Unlock()
}

func (n *Node) SetLocalState(topic string, local func() []byte, merge func(from string, remote []byte)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if local == nil && merge == nil {
		delete(n.locals, topic)
		delete(n.merges, topic)
		return
	}
	n.locals[topic] = local
	n.merges[topic] = merge
}

// pushPull exchanges every topic's local state both ways, like memberlist.
func (n *Node) pushPull(m *Node) {
	for _, pair := range [][2]*Node{{n, m}, {m, n}} {
		src, dst := pair[0], pair[1]
		src.mu.Lock()
		locals := make(map[string]func() []byte, len(src.locals))
		for k, v := range src.locals {
			locals[k] = v
		}
		src.mu.Unlock()
		for topic, local := range locals {
			if st := local(); st != nil {
				dst.enqueue(message{topic: topic, from: src.name, payload: st, merge: true})
			}
		}
	}
}

func (n *Node) enqueue(msg message) {
	n.mu.Lock()
	n.queue = append(n.queue, msg)
	n.mu.Unlock()
	select {
	case n.signal <- struct{}{}:
	default:
	}
}

func (n *Node) deliver() {
	for {
		select {
		case <-n.done:
			return
		case <-n.signal:
		}
		n.mu.Lock()
		q := n.queue
		n.queue = nil
		n.mu.Unlock()
		for _, msg := range q {
			n.mu.Lock()
			var f func(string, []byte)
			if msg.merge {
				f = n.merges[msg.topic]
			} else {
				f = n.subs[msg.topic]
			}
			n.mu.Unlock()
			if f != nil {
				f(msg.from, msg.payload)
			}
		}
	}
}

func (n *Node) close() { n.once.Do(func() { close(n.done) }) }
