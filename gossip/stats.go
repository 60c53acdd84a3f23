package gossip

import "sync/atomic"

// Stats are cumulative counters since New. Rejections never stop the node:
// they are counted here and logged at debug level.
type Stats struct {
	Received      uint64 // user messages handed over by memberlist (packets and streams)
	Delivered     uint64 // messages passed to a topic handler
	Relayed       uint64 // broadcasts re-queued for gossip on first receipt
	Malformed     uint64 // undecodable or truncated messages and push/pull states
	UnknownTopic  uint64 // messages or states for a topic with no handler
	Replayed      uint64 // duplicates and replays (already seen, or older than the window or boot)
	Echoed        uint64 // our own broadcasts coming back through relays
	Undecryptable uint64 // packets and streams memberlist could not decrypt (wrong or no key)
	SendErrors    uint64 // direct sends that failed (packet or stream)
	FanoutDropped uint64 // large-broadcast deliveries dropped because the send queue was full
	QueuePruned   uint64 // queued gossip broadcasts dropped by the queue cap
	EventsDropped uint64 // events dropped (oldest first) because nobody read Events
	StateMerges   uint64 // per-topic merge callbacks run from push/pull
	Rejoined      uint64 // successful re-joins of known machines by the rejoin timer
	Recovered     uint64 // members back from suspicion, state exchanged with them at once
	Queued        int    // gossip broadcasts queued now
	MaxPacket     int    // largest UDP payload written so far
}

type counters struct {
	received, delivered, relayed, malformed, unknownTopic, replayed, echoed,
	undecryptable, sendErrors, fanoutDropped, queuePruned, eventsDropped,
	stateMerges, rejoined, recovered atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (n *Node) Stats() Stats {
	c := &n.stats
	return Stats{
		Received:      c.received.Load(),
		Delivered:     c.delivered.Load(),
		Relayed:       c.relayed.Load(),
		Malformed:     c.malformed.Load(),
		UnknownTopic:  c.unknownTopic.Load(),
		Replayed:      c.replayed.Load(),
		Echoed:        c.echoed.Load(),
		Undecryptable: c.undecryptable.Load(),
		SendErrors:    c.sendErrors.Load(),
		FanoutDropped: c.fanoutDropped.Load(),
		QueuePruned:   c.queuePruned.Load(),
		EventsDropped: c.eventsDropped.Load(),
		StateMerges:   c.stateMerges.Load(),
		Rejoined:      c.rejoined.Load(),
		Recovered:     c.recovered.Load(),
		Queued:        n.queue.len(),
		MaxPacket:     int(n.transport.maxPacket.Load()),
	}
}
