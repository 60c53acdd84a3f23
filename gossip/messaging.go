package gossip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("gossip: node is closed")

// Subscribe sets the handler for topic's messages (broadcasts and SendTo),
// replacing any previous one; nil unsubscribes. Topics starting with '_' are
// reserved (Broadcast and SendTo refuse them). from is the machine that
// created the message. The handler runs on memberlist's receive goroutine:
// it must return quickly (hand work to a goroutine of its own), and it owns
// payload. Messages for a topic nobody subscribed to are counted and dropped.
func (n *Node) Subscribe(topic string, handler func(from string, payload []byte)) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	if handler == nil {
		delete(n.handlers, topic)
		return
	}
	n.handlers[topic] = handler
}

// SetLocalState registers topic's anti-entropy: local() is included in every
// push/pull this machine takes part in (periodic, join and rejoin), and
// merge(from, remote) is called with the other side's bytes for topic. Both
// run on memberlist goroutines and must return quickly; merge owns remote.
// nil functions unregister the topic.
func (n *Node) SetLocalState(topic string, local func() []byte, merge func(from string, remote []byte)) {
	n.hmu.Lock()
	if local == nil && merge == nil {
		delete(n.states, topic)
		n.hmu.Unlock()
		return
	}
	_, had := n.states[topic]
	n.states[topic] = stateFuncs{local: local, merge: merge}
	n.hmu.Unlock()
	if !had {
		// The join in New ran before this topic existed: exchange state
		// with one live member now rather than at the next push/pull.
		n.syncSoon()
	}
}

// syncSoon runs one push/pull with a random live member, in the background.
func (n *Node) syncSoon() {
	peers := n.peers()
	if len(peers) == 0 {
		return
	}
	p := peers[rand.IntN(len(peers))]
	target := p.Name + "/" + addrPort(p.Addr, p.Port).String()
	n.spawn(func() {
		if _, err := n.ml.Join([]string{target}); err != nil {
			n.log.Debug("gossip: state sync failed", "with", p.Name, "err", err)
		}
	})
}

type stateFuncs struct {
	local func() []byte
	merge func(from string, remote []byte)
}

// Broadcast sends payload to every live member, eventually, without
// blocking. A message that fits a packet goes three ways: straight to every
// live member as a UDP packet (the fast path: memberlist does not relay user
// messages, so gossip alone reaches few machines quickly), into the gossip
// queue named (this machine, topic, key) so a newer message with the same
// key replaces a queued older one, and every receiver re-queues it once for
// members this machine does not know. A larger message is streamed to every
// live member by background workers and neither queued nor relayed; members
// it misses catch up through anti-entropy (SetLocalState).
//
// Use one key for messages where the newest supersedes the rest (a head
// set), and distinct keys for messages that must each arrive: only the
// direct packet is guaranteed to be attempted for a superseded message.
func (n *Node) Broadcast(topic, key string, payload []byte) error {
	if err := userTopic(topic); err != nil {
		return fmt.Errorf("gossip: broadcast: %w", err)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("gossip: broadcast on %q: key is %d bytes, limit %d", topic, len(key), MaxKeyLen)
	}
	if len(payload) > MaxPayload {
		return fmt.Errorf("gossip: broadcast on %q key %q: payload is %d bytes, limit %d", topic, key, len(payload), MaxPayload)
	}
	return n.broadcast(topic, key, payload)
}

func (n *Node) broadcast(topic, key string, payload []byte) error {
	if n.closing.Load() {
		return ErrClosed
	}
	m := message{kind: kindBroadcast, origin: n.cfg.Name, epoch: n.epoch, seq: n.seq.Add(1), topic: topic, key: key, payload: payload}
	raw := encodeMessage(&m)
	if len(raw) <= maxPacketMsg {
		n.queue.push(&m, raw)
		// Packets are cheap, so also to members that died recently: a
		// member falsely declared dead (a slow link, a GC pause) still
		// gets the message while it refutes. memberlist's gossip does the
		// same for the same reason.
		peers := n.peersDeadWithin(n.timing.gossipToTheDeadTime)
		for i := range peers {
			if err := n.ml.SendBestEffort(&peers[i], raw); err != nil {
				n.stats.sendErrors.Add(1)
				n.log.Debug("gossip: broadcast packet failed", "topic", topic, "to", peers[i].Name, "err", err)
			}
		}
		return nil
	}
	for _, p := range n.peers() {
		if !n.fanout.enqueue(fanoutJob{to: p, msg: raw}) {
			n.stats.fanoutDropped.Add(1)
		}
	}
	return nil
}

// SendTo delivers payload to member over memberlist's reliable stream (TCP
// inside the tunnel), for payloads of any size up to MaxPayload. It returns
// when the bytes are written or ctx is done.
func (n *Node) SendTo(ctx context.Context, member string, topic string, payload []byte) error {
	if err := userTopic(topic); err != nil {
		return fmt.Errorf("gossip: send to %q: %w", member, err)
	}
	if len(payload) > MaxPayload {
		return fmt.Errorf("gossip: send to %q on %q: payload is %d bytes, limit %d", member, topic, len(payload), MaxPayload)
	}
	if n.closing.Load() {
		return ErrClosed
	}
	n.mu.Lock()
	e, ok := n.members[member]
	var to memberlist.Node
	if ok {
		to, ok = e.node, e.state == Alive
	}
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("gossip: send to %q on %q: not a live member", member, topic)
	}
	if member == n.cfg.Name {
		return fmt.Errorf("gossip: send to %q on %q: that is this machine", member, topic)
	}
	m := message{kind: kindDirect, origin: n.cfg.Name, epoch: n.epoch, seq: n.seq.Add(1), topic: topic, payload: payload}
	raw := encodeMessage(&m)

	// memberlist's send takes no context; run it aside so ctx is honoured.
	// The transport bounds it (dial timeout, stream deadline) and Close
	// aborts it, so the goroutine never outlives the node.
	done := make(chan error, 1)
	if !n.spawn(func() { done <- n.ml.SendReliable(&to, raw) }) {
		return ErrClosed
	}
	select {
	case err := <-done:
		if err != nil {
			n.stats.sendErrors.Add(1)
			return fmt.Errorf("gossip: send to %q on %q (%d bytes): %w", member, topic, len(payload), err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gossip: send to %q on %q: %w", member, topic, ctx.Err())
	}
}

// sendStream is the fanout workers' send.
func (n *Node) sendStream(to *memberlist.Node, msg []byte) {
	if err := n.ml.SendReliable(to, msg); err != nil {
		n.stats.sendErrors.Add(1)
		n.log.Debug("gossip: broadcast stream failed", "to", to.Name, "bytes", len(msg), "err", err)
	}
}

// peers returns copies of every live member but this machine.
func (n *Node) peers() []memberlist.Node { return n.peersDeadWithin(0) }

// peersDeadWithin returns copies of every member but this machine that is
// alive or was declared dead (not left) less than d ago.
func (n *Node) peersDeadWithin(d time.Duration) []memberlist.Node {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]memberlist.Node, 0, len(n.members))
	for name, e := range n.members {
		if name == n.cfg.Name {
			continue
		}
		if e.state == Alive || (e.state == Dead && now.Sub(e.since) < d) {
			out = append(out, e.node)
		}
	}
	return out
}

// receive handles one user message from memberlist: decode, reject what is
// malformed, for nobody, ours or already seen, relay a first-seen broadcast,
// deliver.
func (n *Node) receive(b []byte) {
	n.stats.received.Add(1)
	if n.closing.Load() {
		return
	}
	// memberlist may reuse b after we return, and the handler owns payload.
	raw := clone(b)
	m, err := decodeMessage(raw)
	if err != nil {
		n.stats.malformed.Add(1)
		n.log.Debug("gossip: rejected message", "bytes", len(b), "err", err)
		return
	}
	if m.origin == n.cfg.Name {
		n.stats.echoed.Add(1)
		return
	}
	n.hmu.RLock()
	h := n.handlers[m.topic]
	n.hmu.RUnlock()
	if m.topic == leftTopic && m.kind == kindBroadcast {
		h = func(from string, _ []byte) { n.memberLeaving(from) }
	}
	if h == nil {
		n.stats.unknownTopic.Add(1)
		n.log.Debug("gossip: message for unknown topic", "topic", m.topic, "from", m.origin)
		return
	}
	if !n.replay.accept(m.origin, m.epoch, m.seq, time.Now()) {
		n.stats.replayed.Add(1)
		return
	}
	if m.kind == kindBroadcast && len(raw) <= maxPacketMsg {
		// Its own copy: the handler owns payload, which aliases raw.
		n.queue.push(&m, clone(raw))
		n.stats.relayed.Add(1)
	}
	n.stats.delivered.Add(1)
	h(m.origin, m.payload)
}

// localState encodes every registered topic's state for a push/pull.
func (n *Node) localState() []byte {
	n.hmu.RLock()
	topics := make([]string, 0, len(n.states))
	funcs := make(map[string]func() []byte, len(n.states))
	for t, f := range n.states {
		if f.local != nil {
			topics = append(topics, t)
			funcs[t] = f.local
		}
	}
	n.hmu.RUnlock()
	slices.Sort(topics)
	if len(topics) > maxStateTopics {
		topics = topics[:maxStateTopics]
	}
	states := make([]topicState, 0, len(topics))
	for _, t := range topics {
		states = append(states, topicState{topic: t, data: funcs[t]()})
	}
	return encodeState(n.cfg.Name, states)
}

// mergeState runs a remote push/pull state through the registered merges.
func (n *Node) mergeState(b []byte) {
	if n.closing.Load() {
		return
	}
	origin, states, err := decodeState(clone(b))
	if err != nil {
		n.stats.malformed.Add(1)
		n.log.Debug("gossip: rejected push/pull state", "bytes", len(b), "err", err)
		return
	}
	if origin == n.cfg.Name {
		return
	}
	for _, s := range states {
		n.hmu.RLock()
		f := n.states[s.topic]
		n.hmu.RUnlock()
		if f.merge == nil {
			n.stats.unknownTopic.Add(1)
			continue
		}
		n.stats.stateMerges.Add(1)
		f.merge(origin, s.data)
	}
}
