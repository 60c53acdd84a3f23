package crdt

import "sync/atomic"

// Stats are counters since Open, for tests, the debug view and metrics.
type Stats struct {
	BroadcastsSent     uint64 // head sets handed to gossip
	BroadcastsReceived uint64 // head sets accepted from gossip (broadcast or anti-entropy)
	BroadcastsRejected uint64 // garbage or truncated payloads dropped
	BroadcastsStale    uint64 // payloads naming only heads already processed (replays, anti-entropy of equals)
	BlocksFetched      uint64 // verified blocks stored from other machines
	BlocksRejected     uint64 // blocks whose bytes do not hash to their CID, or malformed streams
	FetchErrors        uint64 // requests to a machine that failed
	FetchRetries       uint64 // prefetch rounds repeated because an announced head was fetchable nowhere yet
	FetchHedged        uint64 // machines asked beside one silent for hedgeAfter
	WatchResyncs       uint64 // watchers that fell too far behind and were resynced
	Unverified         uint64 // reads of records the Verifier refused (unsigned, mis-signed, wrong signer)
}

type counters struct {
	sent, received, rejected, stale      atomic.Uint64
	fetched, blocksRejected, fetchErrors atomic.Uint64
	fetchRetries, fetchHedged            atomic.Uint64
	watchResyncs                         atomic.Uint64
	unverified                           atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		BroadcastsSent:     c.sent.Load(),
		BroadcastsReceived: c.received.Load(),
		BroadcastsRejected: c.rejected.Load(),
		BroadcastsStale:    c.stale.Load(),
		BlocksFetched:      c.fetched.Load(),
		BlocksRejected:     c.blocksRejected.Load(),
		FetchErrors:        c.fetchErrors.Load(),
		FetchRetries:       c.fetchRetries.Load(),
		FetchHedged:        c.fetchHedged.Load(),
		WatchResyncs:       c.watchResyncs.Load(),
		Unverified:         c.unverified.Load(),
	}
}
