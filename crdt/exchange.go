package crdt

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/exchange"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// blockExchange is the boxo exchange behind the blockservice: it fetches the
// blocks go-ds-crdt asks for from other machines through a BlockFetcher,
// verifying every one.
type blockExchange struct {
	fetcher BlockFetcher
	peers   *peers
	st      *counters
	bs      blockstore.Blockstore
	heads   func(context.Context) []cid.Cid // local heads, sent as Have
	log     *slog.Logger
	// idle is how long a machine may stay silent before we try the next.
	idle time.Duration
	// hedge is how long a machine may stay silent before the next is
	// asked beside it (hedgeAfter; tests shorten or lengthen it).
	hedge time.Duration
}

var _ exchange.Interface = (*blockExchange)(nil)

// missAncestors is how many ancestors to ask for along with a block that
// go-ds-crdt's walk could not find locally: a miss deep in the DAG is
// usually followed by misses of its parents.
const missAncestors = 1024

// stopAfterKnown ends an ancestor stream once this many consecutive blocks
// were already stored locally: the walk has reached shared history.
const stopAfterKnown = 256

func (e *blockExchange) GetBlock(ctx context.Context, c cid.Cid) (blocks.Block, error) {
	ch, err := e.GetBlocks(ctx, []cid.Cid{c})
	if err != nil {
		return nil, err
	}
	for b := range ch {
		return b, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, ipld.ErrNotFound{Cid: c}
}

func (e *blockExchange) GetBlocks(ctx context.Context, cids []cid.Cid) (<-chan blocks.Block, error) {
	out := make(chan blocks.Block)
	go func() {
		defer close(out)
		e.fetch(ctx, cids, missAncestors, "", func(b blocks.Block) bool {
			select {
			case out <- b:
				return true
			case <-ctx.Done():
				return false
			}
		})
	}()
	return out, nil
}

// NotifyNewBlocks is a no-op: machines pull blocks, nobody has wants to serve.
func (e *blockExchange) NotifyNewBlocks(context.Context, ...blocks.Block) error { return nil }

func (e *blockExchange) Close() error { return nil }

// hedgeAfter is how long a machine asked for blocks may stay silent
// before the next candidate is asked as well (the first keeps going; the
// first block of either counts). A machine that fails is followed at
// once; one that hangs (a newcomer whose tunnel is not up yet: its TCP
// handshake waits for WireGuard's, then for TCP's 1 s retransmission)
// used to hold the whole fetch for a second or more.
const hedgeAfter = 100 * time.Millisecond

// wantSet is the wanted blocks not yet delivered, shared by the machines
// asked at once: each block is claimed (and delivered) once.
type wantSet struct {
	mu sync.Mutex
	m  map[cid.Cid]struct{}
}

func (w *wantSet) list() []cid.Cid {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]cid.Cid, 0, len(w.m))
	for c := range w.m {
		out = append(out, c)
	}
	return out
}

// claim removes c and reports whether it was still wanted.
func (w *wantSet) claim(c cid.Cid) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.m[c]
	delete(w.m, c)
	return ok
}

func (w *wantSet) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.m)
}

// fetch asks first (if set), then the machines hinted for want, then every
// live machine, until all of want arrived: one machine at a time, except
// that one silent for e.hedge (nothing received yet) gets the next
// candidate asked beside it. Wanted blocks go to deliver (which returns
// false to abort; it may be called from several goroutines, once per
// block); ancestors are stored in the blockstore directly. It returns how
// many wanted blocks are still missing, once every machine asked is done.
func (e *blockExchange) fetch(ctx context.Context, want []cid.Cid, ancestors int, first string, deliver func(blocks.Block) bool) int {
	if e.fetcher == nil || len(want) == 0 {
		return len(want)
	}
	remaining := &wantSet{m: make(map[cid.Cid]struct{}, len(want))}
	for _, c := range want {
		remaining.m[c] = struct{}{}
	}
	machines := e.peers.candidates(want)
	if first != "" && first != e.peers.self {
		machines = append([]string{first}, machines...)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		m   string
		err error
	}
	done := make(chan result, len(machines))
	progress := make(chan struct{}, 1)
	tried := map[string]bool{}
	running, next := 0, 0
	// ask starts the next untried machine; false when none is left.
	ask := func() bool {
		for next < len(machines) {
			m := machines[next]
			next++
			if tried[m] {
				continue
			}
			tried[m] = true
			running++
			go func() {
				done <- result{m, e.fetchFrom(ctx, m, remaining, ancestors, deliver, progress)}
			}()
			return true
		}
		return false
	}
	after := e.hedge
	if after <= 0 {
		after = hedgeAfter
	}
	hedge := time.NewTimer(after)
	defer hedge.Stop()
	for ask(); running > 0; {
		select {
		case r := <-done:
			running--
			if r.err != nil && ctx.Err() == nil {
				e.st.fetchErrors.Add(1)
				e.log.Debug("fetch blocks", "machine", r.m, "want", remaining.len(), "err", r.err)
			}
			if remaining.len() == 0 || ctx.Err() != nil {
				cancel() // the others are not needed: let them end
				continue
			}
			if running == 0 {
				ask()
			}
			hedge.Reset(after)
		case <-progress:
			hedge.Reset(after)
		case <-hedge.C:
			if ctx.Err() == nil && remaining.len() > 0 && ask() {
				e.st.fetchHedged.Add(1)
				hedge.Reset(after)
			}
		}
	}
	return remaining.len()
}

// fetchFrom asks machine m for the blocks still in remaining, and signals
// progress (without blocking) on every block received.
func (e *blockExchange) fetchFrom(ctx context.Context, m string, remaining *wantSet, ancestors int, deliver func(blocks.Block) bool, progress chan<- struct{}) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := FetchRequest{Ancestors: ancestors, Want: remaining.list()}
	if len(req.Want) == 0 {
		return nil
	}
	if ancestors > 0 && e.heads != nil {
		req.Have = e.heads(ctx)
		if len(req.Have) > maxWantPerFetch {
			req.Have = req.Have[:maxWantPerFetch]
		}
	}
	ch, err := e.fetcher.FetchBlocks(ctx, m, req)
	if err != nil {
		return err
	}
	idle := time.NewTimer(e.idle)
	defer idle.Stop()
	var batch []blocks.Block
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := e.bs.PutMany(ctx, batch)
		batch = batch[:0]
		if err != nil {
			return fmt.Errorf("store ancestor blocks from %q: %w", m, err)
		}
		return nil
	}
	known := 0
	for {
		select {
		case <-idle.C:
			flush()
			return fmt.Errorf("machine %q silent for %s with %d blocks missing", m, e.idle, remaining.len())
		case b, ok := <-ch:
			if !ok {
				if err := flush(); err != nil {
					return err
				}
				if n := remaining.len(); n > 0 {
					return fmt.Errorf("machine %q lacks %d of the wanted blocks", m, n)
				}
				return nil
			}
			idle.Reset(e.idle)
			select {
			case progress <- struct{}{}:
			default:
			}
			if err := verifyBlock(b); err != nil {
				e.st.blocksRejected.Add(1)
				e.log.Warn("rejected block", "machine", m, "err", err)
				continue
			}
			c := b.Cid()
			e.peers.hint(m, blockLinks(b)...)
			if remaining.claim(c) {
				e.st.fetched.Add(1)
				if !deliver(b) {
					flush()
					return ctx.Err()
				}
				continue
			}
			if ancestors == 0 {
				e.st.blocksRejected.Add(1) // unrequested
				continue
			}
			has, err := e.bs.Has(ctx, c)
			if err != nil {
				return fmt.Errorf("check block %s: %w", c, err)
			}
			if has {
				known++
				if known >= stopAfterKnown && remaining.len() == 0 {
					return flush()
				}
				continue
			}
			known = 0
			e.st.fetched.Add(1)
			batch = append(batch, b)
			if len(batch) >= 256 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
}
