package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
)

// listStores are three stores alone (no gossip) holding the same n
// container records: unsigned without a Verifier (reads before
// signatures), signed without a Verifier, and signed with one.
type listStores struct {
	w      *world
	n      int
	dir    string
	stores [3]*crdt.Store
}

const (
	storeUnsigned = iota
	storeSignedPlain
	storeVerified
)

var storeNames = [3]string{"unsigned", "signed-plain", "verified"}

// listFigures are medians of List per record, and Open of a whole store.
type listFigures struct {
	unsigned, signedNoCheck, verified []time.Duration
	openPlain, openVerified           time.Duration
}

func newListStores(ctx context.Context, w *world, n int) (*listStores, error) {
	dir, err := os.MkdirTemp("", "bench-trust-")
	if err != nil {
		return nil, err
	}
	ls := &listStores{w: w, n: n, dir: dir}
	cs, err := w.containers(n)
	if err != nil {
		ls.close()
		return nil, err
	}
	for i := range ls.stores {
		if err := ls.open(ctx, i); err != nil {
			ls.close()
			return nil, err
		}
		s := ls.stores[i]
		if i == storeUnsigned {
			for _, c := range cs {
				if err := s.Put(ctx, c.key, c.signed.Record); err != nil {
					ls.close()
					return nil, err
				}
			}
			continue
		}
		// Machine records first, as replication would have brought them;
		// then the containers exactly as their machines signed them.
		for _, m := range w.signed {
			raw, err := crdt.EncodeSigned(m.Record, w.byID[m.By].signer)
			if err == nil {
				err = s.PutUnchecked(ctx, m.Key, raw)
			}
			if err != nil {
				ls.close()
				return nil, err
			}
		}
		for _, c := range cs {
			if err := s.PutUnchecked(ctx, c.key, c.raw); err != nil {
				ls.close()
				return nil, err
			}
		}
	}
	return ls, nil
}

// open opens store i; the verified one gets a fresh Verifier (an empty
// signature cache).
func (ls *listStores) open(ctx context.Context, i int) error {
	cfg := crdt.Config{Dir: filepath.Join(ls.dir, storeNames[i]), Name: storeNames[i], Log: quietLog}
	if i == storeVerified {
		v, err := ls.w.verifier()
		if err != nil {
			return err
		}
		cfg.Verifier = v
		cfg.Signer = ls.w.machines[0].signer
	}
	s, err := crdt.Open(ctx, cfg)
	if err != nil {
		return fmt.Errorf("open %s store: %w", storeNames[i], err)
	}
	ls.stores[i] = s
	return nil
}

func (ls *listStores) close() {
	for i, s := range ls.stores {
		if s != nil {
			s.Close()
			ls.stores[i] = nil
		}
	}
	os.RemoveAll(ls.dir)
}

// measure times Open of the two signed stores (closed and reopened, up to
// three times each) and then List of each store, interleaved.
func (ls *listStores) measure(ctx context.Context, rounds int) (listFigures, error) {
	var f listFigures
	var opens [3][]time.Duration
	for range min(rounds, 3) {
		for _, i := range []int{storeSignedPlain, storeVerified} {
			ls.stores[i].Close()
			ls.stores[i] = nil
			start := time.Now()
			if err := ls.open(ctx, i); err != nil {
				return f, err
			}
			opens[i] = append(opens[i], time.Since(start)/time.Duration(ls.n))
		}
	}
	f.openPlain, f.openVerified = median(opens[storeSignedPlain])*time.Duration(ls.n), median(opens[storeVerified])*time.Duration(ls.n)
	// One List each before timing: badger's block cache and the
	// verifier's signature cache are warm in an agent that has run a while.
	for i, s := range ls.stores {
		if l, err := s.List(ctx, record.ContainersPrefix); err != nil || len(l) != ls.n {
			return f, fmt.Errorf("list the %s store: %d of %d records, %v", storeNames[i], len(l), ls.n, err)
		}
	}
	// A List of 10,000 varies by more than the check adds: three times
	// the rounds.
	for range 3 * rounds {
		for i, s := range ls.stores {
			var l []crdt.Record
			var err error
			d := perRecord(ls.n, func() error {
				l, err = s.List(ctx, record.ContainersPrefix)
				return err
			})
			if err != nil || len(l) != ls.n {
				return f, fmt.Errorf("list the %s store: %d of %d records, %v", storeNames[i], len(l), ls.n, err)
			}
			switch i {
			case storeUnsigned:
				f.unsigned = append(f.unsigned, d)
			case storeSignedPlain:
				f.signedNoCheck = append(f.signedNoCheck, d)
			case storeVerified:
				f.verified = append(f.verified, d)
			}
		}
	}
	return f, nil
}
