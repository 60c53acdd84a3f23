package crdt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	"github.com/ipfs/go-ds-crdt/pb"
	"google.golang.org/protobuf/proto"
)

// A local write in go-ds-crdt is several separate badger writes: store the
// block, merge its delta into the set, mark it processed, make it a head.
// kill -9 between them leaves a block whose effects are (partly) in the
// local set but which no head reaches: it would never replicate, and this
// replica would differ from the others forever. So after an unclean
// shutdown (the marker file below still exists at Open), every local block
// that no head reaches is put back: a processed one is re-attached as a
// head, an unprocessed one is processed again (merging is idempotent).

const openMarker = "crdt-open"

// uncleanShutdown reports whether the previous run did not Close, and
// marks this run as open.
func uncleanShutdown(dir string) (bool, error) {
	p := filepath.Join(dir, openMarker)
	_, err := os.Stat(p)
	unclean := err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("check %s: %w", p, err)
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		return false, fmt.Errorf("write %s: %w", p, err)
	}
	return unclean, nil
}

func markClosed(dir string) error {
	return os.Remove(filepath.Join(dir, openMarker))
}

// recoverOrphans re-attaches processed orphans as heads (before go-ds-crdt
// starts) and returns the unprocessed ones, to be processed once it runs.
func recoverOrphans(ctx context.Context, db ds.Batching, bs blockstore.Blockstore) (reattached int, resubmit []cid.Cid, err error) {
	headsNs := crdtNamespace.ChildString("h")
	heads := map[cid.Cid]bool{}
	res, err := db.Query(ctx, query.Query{Prefix: headsNs.String(), KeysOnly: true})
	if err != nil {
		return 0, nil, fmt.Errorf("list heads: %w", err)
	}
	for r := range res.Next() {
		if r.Error != nil {
			return 0, nil, fmt.Errorf("list heads: %w", r.Error)
		}
		k := ds.RawKey(r.Key[len(headsNs.String()):])
		c, err := dshelp.DsKeyToCidV1(k, cid.DagProtobuf)
		if err != nil {
			continue
		}
		heads[c] = true
	}
	res.Close()

	// Everything the heads reach.
	reach := cid.NewSet()
	queue := make([]cid.Cid, 0, len(heads))
	for h := range heads {
		if reach.Visit(h) {
			queue = append(queue, h)
		}
	}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		b, err := bs.Get(ctx, c)
		if err != nil {
			continue // not local (yet): nothing of ours below it
		}
		for _, l := range blockLinks(b) {
			if reach.Visit(l) {
				queue = append(queue, l)
			}
		}
	}

	// Local blocks nothing reaches, and which of them others link to.
	keys, err := bs.AllKeysChan(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("list blocks: %w", err)
	}
	orphans := map[cid.Cid][]cid.Cid{}
	for k := range keys {
		c := cid.NewCidV1(cid.DagProtobuf, k.Hash())
		if reach.Has(c) {
			continue
		}
		b, err := bs.Get(ctx, c)
		if err != nil {
			continue
		}
		orphans[c] = blockLinks(b)
	}
	linked := cid.NewSet()
	for _, links := range orphans {
		for _, l := range links {
			linked.Add(l)
		}
	}
	for c, links := range orphans {
		if linked.Has(c) {
			continue // not a root: processing its root covers it
		}
		processed, err := db.Has(ctx, crdtNamespace.ChildString("b").ChildString(dshelp.MultihashToDsKey(c.Hash()).String()))
		if err != nil {
			return reattached, resubmit, fmt.Errorf("check block %s: %w", c, err)
		}
		if !processed {
			resubmit = append(resubmit, c)
			continue
		}
		prio, err := blockPriority(ctx, bs, c)
		if err != nil {
			return reattached, resubmit, err
		}
		buf := binary.AppendUvarint(nil, prio)
		if err := db.Put(ctx, headsNs.Child(dshelp.MultihashToDsKey(c.Hash())), buf); err != nil {
			return reattached, resubmit, fmt.Errorf("re-attach head %s: %w", c, err)
		}
		for _, l := range links {
			if heads[l] {
				if err := db.Delete(ctx, headsNs.Child(dshelp.MultihashToDsKey(l.Hash()))); err != nil {
					return reattached, resubmit, fmt.Errorf("replace head %s: %w", l, err)
				}
			}
		}
		reattached++
	}
	return reattached, resubmit, nil
}

// blockPriority is the height go-ds-crdt stored in a block's delta.
func blockPriority(ctx context.Context, bs blockstore.Blockstore, c cid.Cid) (uint64, error) {
	b, err := bs.Get(ctx, c)
	if err != nil {
		return 0, fmt.Errorf("read block %s: %w", c, err)
	}
	n, err := merkledag.DecodeProtobuf(b.RawData())
	if err != nil {
		return 0, fmt.Errorf("decode block %s: %w", c, err)
	}
	var d pb.Delta
	if err := proto.Unmarshal(n.Data(), &d); err != nil {
		return 0, fmt.Errorf("decode delta of %s: %w", c, err)
	}
	return d.GetPriority(), nil
}
