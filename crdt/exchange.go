package crdt

import (
	"context"
	"fmt"
	"log/slog"
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

// fetch asks first (if set), then the machines hinted for want, then every
// live machine, until all of want arrived. Wanted blocks go to deliver (which
// returns false to abort); ancestors are stored in the blockstore directly.
// It returns how many wanted blocks are still missing.
func (e *blockExchange) fetch(ctx context.Context, want []cid.Cid, ancestors int, first string, deliver func(blocks.Block) bool) int {
	if e.fetcher == nil || len(want) == 0 {
		return len(want)
	}
	remaining := make(map[cid.Cid]struct{}, len(want))
	for _, c := range want {
		remaining[c] = struct{}{}
	}
	machines := e.peers.candidates(want)
	if first != "" && first != e.peers.self {
		machines = append([]string{first}, machines...)
	}
	tried := map[string]bool{}
	for _, m := range machines {
		if len(remaining) == 0 || ctx.Err() != nil {
			break
		}
		if tried[m] {
			continue
		}
		tried[m] = true
		if err := e.fetchFrom(ctx, m, remaining, ancestors, deliver); err != nil {
			e.st.fetchErrors.Add(1)
			e.log.Debug("fetch blocks", "machine", m, "want", len(remaining), "err", err)
		}
	}
	return len(remaining)
}

func (e *blockExchange) fetchFrom(ctx context.Context, m string, remaining map[cid.Cid]struct{}, ancestors int, deliver func(blocks.Block) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := FetchRequest{Ancestors: ancestors}
	for c := range remaining {
		req.Want = append(req.Want, c)
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
			return fmt.Errorf("machine %q silent for %s with %d blocks missing", m, e.idle, len(remaining))
		case b, ok := <-ch:
			if !ok {
				if err := flush(); err != nil {
					return err
				}
				if len(remaining) > 0 {
					return fmt.Errorf("machine %q lacks %d of the wanted blocks", m, len(remaining))
				}
				return nil
			}
			idle.Reset(e.idle)
			if err := verifyBlock(b); err != nil {
				e.st.blocksRejected.Add(1)
				e.log.Warn("rejected block", "machine", m, "err", err)
				continue
			}
			c := b.Cid()
			e.peers.hint(m, blockLinks(b)...)
			if _, ok := remaining[c]; ok {
				delete(remaining, c)
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
				if known >= stopAfterKnown && len(remaining) == 0 {
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
