package crdt

import (
	"context"
	"fmt"
	"strings"

	"github.com/ipfs/go-datastore/query"
)

// Counts is what a replica holds now, for the metrics an agent serves at
// every scrape: keys are counted without decoding or verifying them, and
// blocks by listing the blockstore's keys, so it costs one pass over
// keys (no values are decoded) and no disk sync, unlike Size.
type Counts struct {
	// Keys counts live keys by their first path segment: "machines"
	// for /machines/m1. Unverified records are counted too: this is what
	// is stored, not what is believed.
	Keys   map[string]int
	Blocks int // DAG blocks in the blockstore
	Heads  int // current DAG heads
}

// Counts reads the replica's counts.
func (s *Store) Counts(ctx context.Context) (Counts, error) {
	out := Counts{Keys: map[string]int{}, Heads: len(s.Heads(ctx))}
	res, err := s.crdt.Query(ctx, query.Query{Prefix: "/", KeysOnly: true})
	if err != nil {
		return out, fmt.Errorf("count keys in %s: %w", s.cfg.Dir, err)
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return out, fmt.Errorf("count keys in %s: %w", s.cfg.Dir, r.Error)
		}
		seg, _, _ := strings.Cut(strings.TrimPrefix(r.Key, "/"), "/")
		out.Keys[seg]++
	}
	ch, err := s.bs.AllKeysChan(ctx)
	if err != nil {
		return out, fmt.Errorf("count blocks in %s: %w", s.cfg.Dir, err)
	}
	for range ch {
		out.Blocks++
	}
	return out, nil
}
