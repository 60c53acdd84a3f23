package crdt

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	dscrdt "github.com/ipfs/go-ds-crdt"
	"github.com/ipfs/go-ds-crdt/pb"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"
)

// Gossip is the broadcast transport crdt consumes; package gossip's *Node
// satisfies it. Contract:
//   - Broadcast never blocks; a broadcast with the same (topic, key) as one
//     still queued replaces it.
//   - Subscribe's handler gets every message on topic from other machines.
//   - SetLocalState's local is sent on every push/pull and merge gets the
//     remote side's, which makes every push/pull an anti-entropy round.
type Gossip interface {
	Broadcast(topic, key string, payload []byte) error
	Subscribe(topic string, handler func(from string, payload []byte))
	SetLocalState(topic string, local func() []byte, merge func(from string, remote []byte))
	LocalName() string
}

// maxHeadsPerPayload bounds a head set; a healthy store has a handful of
// heads, a few hundred after long partitions with many writers.
const maxHeadsPerPayload = 1024

// broadcaster implements go-ds-crdt's Broadcaster over Gossip.
//
// Outbound, Broadcast only replaces a one-slot mailbox that a sender
// goroutine hands to gossip under the key of this machine: the newest local
// head set descends from every older one, so dropping older ones loses
// nothing, and a lone machine's queue stays at one entry.
//
// Inbound, each payload is validated, its already-processed heads are
// dropped (replays and anti-entropy between equals end here), the rest is
// coalesced per origin (the union of what arrived while the previous batch
// was being fetched: datagrams reorder, so the last to arrive need not be
// the newest; go-ds-crdt skips heads already processed),
// prefetched with all missing ancestors in one streamed request, and only
// then handed to go-ds-crdt through Next, so its DAG walk finds the blocks
// locally.
type broadcaster struct {
	g     Gossip
	topic string
	self  string
	st    *counters
	peers *peers
	log   *slog.Logger

	// set by the store once go-ds-crdt exists
	unprocessed func(context.Context, []cid.Cid) []cid.Cid
	uncovered   func(context.Context, []cid.Cid) []cid.Cid
	// pendingBranch returns the part of frontier whose branch above floor
	// is not merged yet; headState reports the max height and whether all
	// of the given blocks are heads.
	pendingBranch func(ctx context.Context, frontier []cid.Cid, floor uint64, seen *cid.Set) ([]cid.Cid, int)
	headState     func(ctx context.Context, cids []cid.Cid) (maxHeight uint64, allHeads bool)
	// prefetch returns how many of heads are still not in the blockstore.
	prefetch   func(ctx context.Context, from string, heads []cid.Cid) int
	local      func(ctx context.Context, c cid.Cid) bool
	localHeads func(context.Context) []cid.Cid

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	outMu      sync.Mutex
	outPending []byte
	outSignal  chan struct{}

	inMu     sync.Mutex
	closed   bool
	pending  map[string][]cid.Cid // origin → newest heads awaiting prefetch
	busy     map[string]bool      // origin → prefetch worker running
	relay    map[string]bool      // origin → pending heads came by push/pull
	ready    map[string][]cid.Cid // origin → heads ready for go-ds-crdt
	order    []string             // origins in ready, oldest first
	inSignal chan struct{}
	sem      chan struct{} // bounds concurrent prefetches

	// inflight are the heads last handed to go-ds-crdt and the max height
	// before they were (only Next touches them).
	inflight      []cid.Cid
	inflightFloor uint64
}

// stallAfter is how long Next waits for the previous head set's merge to
// make progress before handing over the next one anyway. go-ds-crdt processes the heads of
// different Next calls in parallel (MultiHeadProcessing, so one head that
// cannot be fetched does not stall the rest), but two heads of one chain
// processed at once both end up as heads: measured, 10,000 quick writes left
// 7,000 heads on a receiver. Waiting keeps processing sequential unless
// something is stuck.
const stallAfter = 2 * time.Second

var _ dscrdt.Broadcaster = (*broadcaster)(nil)

func newBroadcaster(g Gossip, topic string, st *counters, p *peers, log *slog.Logger) *broadcaster {
	ctx, cancel := context.WithCancel(context.Background())
	return &broadcaster{
		g: g, topic: topic, self: g.LocalName(), st: st, peers: p, log: log,
		ctx: ctx, cancel: cancel,
		outSignal: make(chan struct{}, 1),
		pending:   map[string][]cid.Cid{},
		busy:      map[string]bool{},
		relay:     map[string]bool{},
		ready:     map[string][]cid.Cid{},
		inSignal:  make(chan struct{}, 1),
		sem:       make(chan struct{}, 4),
	}
}

// start subscribes and starts the sender; call after the hooks are set.
func (b *broadcaster) start() {
	b.g.Subscribe(b.topic, func(from string, p []byte) { b.receive(from, p, false) })
	b.g.SetLocalState(b.topic, b.localState, func(from string, p []byte) { b.receive(from, p, true) })
	b.wg.Add(1)
	go b.sender()
}

func (b *broadcaster) close() {
	b.inMu.Lock()
	b.closed = true // no new prefetch workers: wg.Add must not race wg.Wait
	b.inMu.Unlock()
	// Unregister, so a store reopened on the same gossip node registers
	// afresh (and gossip runs an anti-entropy round right away).
	b.g.Subscribe(b.topic, nil)
	b.g.SetLocalState(b.topic, nil, nil)
	b.cancel()
	b.wg.Wait()
}

// Broadcast implements dscrdt.Broadcaster. It never blocks.
func (b *broadcaster) Broadcast(_ context.Context, data []byte) error {
	b.outMu.Lock()
	b.outPending = data
	b.outMu.Unlock()
	select {
	case b.outSignal <- struct{}{}:
	default:
	}
	return nil
}

func (b *broadcaster) sender() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.outSignal:
		}
		b.outMu.Lock()
		data := b.outPending
		b.outPending = nil
		b.outMu.Unlock()
		if data == nil {
			continue
		}
		if err := b.g.Broadcast(b.topic, b.self, data); err != nil {
			b.log.Warn("broadcast heads", "err", err)
			continue
		}
		b.st.sent.Add(1)
	}
}

// Next implements dscrdt.Broadcaster: it blocks until a prefetched head set
// is ready and returns ErrNoMoreBroadcast once the store closes.
func (b *broadcaster) Next(ctx context.Context) ([]byte, error) {
	b.awaitInflight(ctx)
	for {
		b.inMu.Lock()
		if len(b.order) > 0 {
			origin := b.order[0]
			b.order = b.order[1:]
			heads := b.ready[origin]
			delete(b.ready, origin)
			b.inMu.Unlock()
			if b.unprocessed != nil {
				heads = b.unprocessed(ctx, heads)
			}
			if b.uncovered != nil {
				heads = b.uncovered(ctx, heads)
			}
			if len(heads) == 0 {
				continue
			}
			// A head whose block could not be fetched fails in
			// go-ds-crdt at once (it drops the head until it is
			// announced again), so there is no merge to wait for: waiting
			// stallAfter for it held up every later head set, such as
			// the one that brings the block as an ancestor.
			b.inflight = nil
			for _, c := range heads {
				if b.local == nil || b.local(ctx, c) {
					b.inflight = append(b.inflight, c)
				}
			}
			if b.headState != nil {
				b.inflightFloor, _ = b.headState(ctx, nil)
			}
			return encodeHeads(heads)
		}
		b.inMu.Unlock()
		select {
		case <-b.inSignal:
		case <-b.ctx.Done():
			return nil, dscrdt.ErrNoMoreBroadcast
		case <-ctx.Done():
			return nil, dscrdt.ErrNoMoreBroadcast
		}
	}
}

// awaitInflight waits until the branches of the heads handed out last are
// merged down to the height this replica had then, and the heads are heads
// (or already built upon), giving up after stallAfter without progress.
func (b *broadcaster) awaitInflight(ctx context.Context) {
	defer func() { b.inflight = nil }()
	if len(b.inflight) == 0 || b.pendingBranch == nil || b.headState == nil {
		return
	}
	deadline := time.Now().Add(stallAfter)
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	frontier := b.inflight
	seen := cid.NewSet()
	for time.Now().Before(deadline) {
		var merged int
		frontier, merged = b.pendingBranch(ctx, frontier, b.inflightFloor, seen)
		if merged > 0 {
			// Still merging (a long catch-up, a slow machine): only a
			// branch that makes no progress counts as stalled.
			deadline = time.Now().Add(stallAfter)
		}
		if len(frontier) == 0 {
			// The walk reached known history; the last head replacement
			// follows the last merge by microseconds.
			if maxH, all := b.headState(ctx, b.inflight); all || maxH > b.inflightFloor+uint64(len(b.inflight)) {
				return
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		case <-b.ctx.Done():
			return
		}
	}
}

// localState is this machine's heads for gossip's push/pull.
func (b *broadcaster) localState() []byte {
	if b.localHeads == nil {
		return nil
	}
	heads := b.localHeads(b.ctx)
	if len(heads) == 0 {
		return nil
	}
	if len(heads) > maxHeadsPerPayload {
		heads = heads[:maxHeadsPerPayload] // the rest travel in later rounds and writes
	}
	data, err := encodeHeads(heads)
	if err != nil {
		b.log.Warn("encode local heads", "err", err)
		return nil
	}
	return data
}

// receive takes a head set from gossip (a broadcast or, with viaState, a
// push/pull).
func (b *broadcaster) receive(from string, payload []byte, viaState bool) {
	if b.ctx.Err() != nil || from == b.self {
		return
	}
	b.peers.seen(from)
	if len(payload) == 0 {
		return // a machine with no heads yet
	}
	heads, err := decodeHeads(payload)
	if err != nil {
		b.st.rejected.Add(1)
		b.log.Debug("rejected head broadcast", "from", from, "len", len(payload), "err", err)
		return
	}
	if b.unprocessed != nil {
		heads = b.unprocessed(b.ctx, heads)
	}
	if len(heads) == 0 {
		b.st.stale.Add(1)
		return
	}
	b.st.received.Add(1)
	b.peers.hint(from, heads...)
	b.inMu.Lock()
	if b.closed {
		b.inMu.Unlock()
		return
	}
	b.pending[from] = unionHeads(b.pending[from], heads)
	if viaState {
		b.relay[from] = true
	}
	start := !b.busy[from]
	b.busy[from] = true
	if start {
		b.wg.Add(1)
		go b.prefetchWorker(from)
	}
	b.inMu.Unlock()
}

// prefetchWorker fetches the newest pending heads of one origin with their
// ancestors, then queues them for go-ds-crdt, until none are pending.
func (b *broadcaster) prefetchWorker(from string) {
	defer b.wg.Done()
	for {
		b.inMu.Lock()
		heads, ok := b.pending[from]
		relay := b.relay[from]
		delete(b.pending, from)
		delete(b.relay, from)
		if !ok || b.ctx.Err() != nil {
			b.busy[from] = false
			b.inMu.Unlock()
			return
		}
		b.inMu.Unlock()
		heads, relay = b.prefetchRetrying(from, heads, relay)
		b.enqueueReady(from, heads)
		if relay {
			b.relayHeads(heads)
		}
	}
}

// prefetchRetrying prefetches heads and, while some are still missing,
// tries again after a short jittered backoff (fetchRetries times at most).
// A head is announced the moment it is written, but its blocks may be
// fetchable from nowhere yet: a new machine's first record lives only on
// that machine, which the others cannot reach until they have the record,
// and the issuer of its token fetches it only a few milliseconds later.
// Without the retry the head went to go-ds-crdt unfetched, was dropped,
// and came back only with the next head set that descends from it (1–2 s
// later at best). The concurrency slot is released while waiting, and
// heads the same origin announced meanwhile join the next round rather
// than waiting behind the retries. It returns the heads and relay flag
// to hand on.
func (b *broadcaster) prefetchRetrying(from string, heads []cid.Cid, relay bool) ([]cid.Cid, bool) {
	if b.prefetch == nil {
		return heads, relay
	}
	wait := fetchRetryFirst
	for attempt := 0; ; attempt++ {
		select {
		case b.sem <- struct{}{}:
		case <-b.ctx.Done():
			return heads, relay
		}
		left := b.prefetch(b.ctx, from, heads)
		<-b.sem
		if left == 0 || attempt >= fetchRetries {
			return heads, relay
		}
		b.st.fetchRetries.Add(1)
		t := time.NewTimer(jitter(wait))
		select {
		case <-t.C:
		case <-b.ctx.Done():
			t.Stop()
			return heads, relay
		}
		wait = min(2*wait, fetchRetryMax)
		b.inMu.Lock()
		if more, ok := b.pending[from]; ok {
			heads = unionHeads(heads, more)
			relay = relay || b.relay[from]
			delete(b.pending, from)
			delete(b.relay, from)
		}
		b.inMu.Unlock()
	}
}

// The prefetch retry: 20, 40, 80, 160, then 200 ms four more times (±25 %),
// about 1.1 s in all: long enough for the issuer of a join token (measured
// 10–20 ms behind) or a relaying member to fetch the block, and bounded so
// an unfetchable head costs each live machine at most fetchRetries+1
// requests per announcement, at most ~5 a second once backed off
// (announcements of one origin that arrive meanwhile are coalesced into the
// next round, and at most 4 origins fetch at once).
const (
	fetchRetryFirst = 20 * time.Millisecond
	fetchRetryMax   = 200 * time.Millisecond
	fetchRetries    = 8
)

// jitter spreads d by ±25 %, so receivers of one announcement do not ask
// the same machine in lockstep.
func jitter(d time.Duration) time.Duration {
	return d - d/4 + rand.N(d/2+1)
}

// relayHeads announces heads learnt through anti-entropy to everyone.
// gossip relays broadcasts but not push/pull state, so after a partition
// heals only the two machines of one push/pull would learn the other
// side's heads until the next periodic push/pull (20 s). Having fetched the
// blocks, this machine can serve them. The key differs from our own
// announcements so neither replaces the other in gossip's queue.
func (b *broadcaster) relayHeads(heads []cid.Cid) {
	data, err := encodeHeads(heads)
	if err != nil {
		return
	}
	if err := b.g.Broadcast(b.topic, b.self+"/relay", data); err != nil {
		b.log.Debug("relay heads", "err", err)
	}
}

// enqueueReady hands heads to go-ds-crdt's Next, replacing older ones of
// the same origin.
func (b *broadcaster) enqueueReady(from string, heads []cid.Cid) {
	b.inMu.Lock()
	if _, queued := b.ready[from]; !queued {
		b.order = append(b.order, from)
	}
	b.ready[from] = unionHeads(b.ready[from], heads)
	b.inMu.Unlock()
	select {
	case b.inSignal <- struct{}{}:
	default:
	}
}

func encodeHeads(heads []cid.Cid) ([]byte, error) {
	msg := pb.CRDTBroadcast{}
	for _, c := range heads {
		msg.Heads = append(msg.Heads, &pb.Head{Cid: c.Bytes()})
	}
	data, err := proto.Marshal(&msg)
	if err != nil {
		return nil, fmt.Errorf("encode %d heads: %w", len(heads), err)
	}
	return data, nil
}

// decodeHeads parses and checks a head set: a well-formed protobuf with no
// unknown fields, 1..maxHeadsPerPayload heads, each a CIDv1 dag-pb sha2-256
// CID as go-ds-crdt makes them.
func decodeHeads(data []byte) ([]cid.Cid, error) {
	var msg pb.CRDTBroadcast
	if err := proto.Unmarshal(data, &msg); err != nil {
		return nil, fmt.Errorf("decode head set: %w", err)
	}
	if len(msg.ProtoReflect().GetUnknown()) > 0 {
		return nil, fmt.Errorf("head set has unknown fields")
	}
	if len(msg.Heads) == 0 || len(msg.Heads) > maxHeadsPerPayload {
		return nil, fmt.Errorf("head set has %d heads, want 1..%d", len(msg.Heads), maxHeadsPerPayload)
	}
	out := make([]cid.Cid, 0, len(msg.Heads))
	for i, h := range msg.Heads {
		c, err := cid.Cast(h.GetCid())
		if err != nil {
			return nil, fmt.Errorf("head %d: %w", i, err)
		}
		p := c.Prefix()
		if p.Version != 1 || p.Codec != cid.DagProtobuf || p.MhType != mh.SHA2_256 || p.MhLength != 32 {
			return nil, fmt.Errorf("head %d: %s is not a CIDv1 dag-pb sha2-256", i, c)
		}
		out = append(out, c)
	}
	return out, nil
}

// unionHeads adds heads to old without duplicates, keeping at most
// maxHeadsPerPayload (the most recently received).
func unionHeads(old, heads []cid.Cid) []cid.Cid {
	out := old
	for _, c := range heads {
		if !slices.ContainsFunc(out, c.Equals) {
			out = append(out, c)
		}
	}
	if len(out) > maxHeadsPerPayload {
		out = out[len(out)-maxHeadsPerPayload:]
	}
	return out
}
