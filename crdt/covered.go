package crdt

import (
	"context"
	"slices"

	"github.com/ipfs/go-cid"
)

// maxCoverWalk bounds the blocks uncovered visits for one head set.
const maxCoverWalk = 50_000

// uncovered drops the heads that are ancestors of other heads in the set,
// walking local blocks only (after prefetch the DAG is local) from the
// highest head down to the lowest head's height. Handing go-ds-crdt a head
// together with its own ancestor makes both heads when they are processed
// in parallel; the descendant alone brings the ancestor in anyway.
func (s *Store) uncovered(ctx context.Context, heads []cid.Cid) []cid.Cid {
	if len(heads) < 2 {
		return heads
	}
	type hp struct {
		c    cid.Cid
		prio uint64
	}
	hs := make([]hp, 0, len(heads))
	for _, c := range heads {
		p, err := blockPriority(ctx, s.bs, c)
		if err != nil {
			return heads // not local: let go-ds-crdt fetch and sort it out
		}
		hs = append(hs, hp{c, p})
	}
	slices.SortFunc(hs, func(a, b hp) int { return int64Cmp(b.prio, a.prio) })
	floor := hs[len(hs)-1].prio
	wanted := map[cid.Cid]bool{}
	for _, h := range hs {
		wanted[h.c] = true
	}
	covered := map[cid.Cid]bool{}
	seen := cid.NewSet()
	visits := 0
	for _, h := range hs {
		if covered[h.c] {
			continue
		}
		queue := []cid.Cid{h.c}
		seen.Add(h.c)
		for len(queue) > 0 && visits < maxCoverWalk {
			c := queue[0]
			queue = queue[1:]
			visits++
			b, err := s.bs.Get(ctx, c)
			if err != nil {
				continue
			}
			for _, l := range blockLinks(b) {
				if wanted[l] {
					covered[l] = true
				}
				if !seen.Visit(l) {
					continue
				}
				if p, err := blockPriority(ctx, s.bs, l); err == nil && p > floor {
					queue = append(queue, l)
				}
			}
		}
	}
	out := make([]cid.Cid, 0, len(heads))
	for _, c := range heads {
		if !covered[c] {
			out = append(out, c)
		}
	}
	return out
}

func int64Cmp(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// pendingBranch advances a walk down from frontier: processed blocks are
// replaced by their children above floor (each visited once); unprocessed
// ones stay. An empty result means the branch is merged down to floor;
// merged counts the blocks found merged (progress).
func (s *Store) pendingBranch(ctx context.Context, frontier []cid.Cid, floor uint64, seen *cid.Set) (next []cid.Cid, merged int) {
	for len(frontier) > 0 {
		c := frontier[len(frontier)-1]
		frontier = frontier[:len(frontier)-1]
		if len(s.unprocessed(ctx, []cid.Cid{c})) > 0 {
			next = append(next, c)
			continue
		}
		merged++
		b, err := s.bs.Get(ctx, c)
		if err != nil {
			continue
		}
		for _, l := range blockLinks(b) {
			if !seen.Visit(l) {
				continue
			}
			if p, err := blockPriority(ctx, s.bs, l); err != nil || p > floor {
				frontier = append(frontier, l)
			}
		}
	}
	return next, merged
}

// headState returns the current max height and whether every one of cids
// is a head.
func (s *Store) headState(ctx context.Context, cids []cid.Cid) (uint64, bool) {
	st := s.crdt.InternalStats(ctx)
	for _, c := range cids {
		if !slices.ContainsFunc(st.Heads, c.Equals) {
			return st.MaxHeight, false
		}
	}
	return st.MaxHeight, true
}
