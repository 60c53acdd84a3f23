package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate is the only coupling between memberlist and Node: memberlist
// calls it, it calls Node. It is a separate type so memberlist's callback
// names stay off Node's public method set.
//
// Every method runs on a memberlist goroutine; the event callbacks run under
// memberlist's node lock, so nothing here may call back into memberlist.
type delegate struct{ n *Node }

var (
	_ memberlist.Delegate      = delegate{}
	_ memberlist.EventDelegate = delegate{}
)

// NodeMeta returns this machine's metadata (validated ≤ limit by SetMeta).
func (d delegate) NodeMeta(limit int) []byte {
	d.n.mu.Lock()
	defer d.n.mu.Unlock()
	if len(d.n.meta) > limit {
		// Unreachable (SetMeta checks), but memberlist panics on oversize
		// metadata, so never hand it any.
		return nil
	}
	return clone(d.n.meta)
}

// NotifyMsg receives a user message from a packet or a stream.
func (d delegate) NotifyMsg(b []byte) { d.n.receive(b) }

// GetBroadcasts hands memberlist queued broadcasts to piggyback.
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.queue.get(overhead, limit)
}

// LocalState is this machine's share of a push/pull: every topic's state.
func (d delegate) LocalState(join bool) []byte { return d.n.localState() }

// MergeRemoteState runs the other side's topic states through the merges.
func (d delegate) MergeRemoteState(b []byte, join bool) { d.n.mergeState(b) }

func (d delegate) NotifyJoin(node *memberlist.Node)   { d.n.memberChanged(Join, node) }
func (d delegate) NotifyLeave(node *memberlist.Node)  { d.n.memberChanged(Leave, node) }
func (d delegate) NotifyUpdate(node *memberlist.Node) { d.n.memberChanged(Update, node) }

// memberChanged updates the membership table and emits the event.
func (n *Node) memberChanged(kind EventKind, node *memberlist.Node) {
	c := copyNode(node)
	n.mu.Lock()
	e, ok := n.members[c.Name]
	if !ok {
		e = &memberEntry{}
		n.members[c.Name] = e
	}
	state := Alive
	switch {
	case kind == Join:
		e.leaving = false
	case kind == Leave && e.leaving:
		state = Left
	case kind == Leave:
		state = Dead
	}
	wasAlive := ok && e.state == Alive
	e.node, e.state, e.since = c, state, time.Now()
	switch {
	case state == Alive && !wasAlive:
		n.alive.Add(1)
	case state != Alive && wasAlive:
		n.alive.Add(-1)
	}
	m := e.member()
	n.mu.Unlock()

	if kind == Join && c.Name != n.cfg.Name {
		// A machine back from dead may have restarted with a clock that
		// went backwards; let its new boot's messages in.
		n.replay.rejoined(c.Name)
	}
	n.events.push(Event{Kind: kind, Member: m})
}

// memberLeaving records origin's Leave announcement. If memberlist already
// reported it gone, it is Left rather than Dead from now on (no new event).
func (n *Node) memberLeaving(origin string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if e, ok := n.members[origin]; ok {
		e.leaving = true
		if e.state == Dead {
			e.state = Left
		}
	}
}
