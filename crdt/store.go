package crdt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	"github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/boxo/ipld/merkledag"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	badgerds "github.com/ipfs/go-ds-badger4"
	dscrdt "github.com/ipfs/go-ds-crdt"
)

// Config configures a replica.
type Config struct {
	// Dir is the data directory; it is created 0700 if missing.
	Dir string
	// Name of this machine when Gossip is nil (offline, tests); with
	// Gossip, Gossip.LocalName() is used.
	Name string
	// Gossip carries head announcements; nil runs the store alone.
	Gossip Gossip
	// Fetcher brings blocks from other machines; nil never fetches.
	Fetcher BlockFetcher
	// LiveMachines optionally lists live machines (gossip members); without
	// it, machines heard from in the last two minutes count as live.
	LiveMachines func() []string
	// Topic on Gossip; default "crdt".
	Topic string
	Log   *slog.Logger

	// DAGSyncerTimeout bounds one DAG fetch inside go-ds-crdt (default 15 s;
	// go-ds-crdt's 5 minutes lets one unreachable head stall processing,
	// 0 makes every fetch fail).
	DAGSyncerTimeout time.Duration
	// RebroadcastInterval re-announces heads nobody announced lately
	// (default 30 s; gossip push/pull carries heads as well).
	RebroadcastInterval time.Duration
	// RepairInterval walks a DAG marked dirty by a failed merge (default 10 s).
	RepairInterval time.Duration
	// FetchIdle is how long a machine may send nothing before the next is
	// asked (default 3 s).
	FetchIdle time.Duration
	// SyncInterval flushes badger to disk (default 1 s; see package doc).
	SyncInterval time.Duration

	// Signer signs every record this replica writes; nil writes unsigned
	// records (tests, tools).
	Signer Signer
	// Verifier checks every record read; nil accepts every record.
	Verifier Verifier
}

func (c *Config) defaults() {
	if c.Topic == "" {
		c.Topic = "crdt"
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.DAGSyncerTimeout <= 0 {
		c.DAGSyncerTimeout = 15 * time.Second
	}
	if c.RebroadcastInterval <= 0 {
		c.RebroadcastInterval = 30 * time.Second
	}
	if c.RepairInterval <= 0 {
		// A branch whose walk failed half-way (a block's holder went
		// away mid-fetch) marks the store dirty, and only a repair
		// brings the rest of it; go-ds-crdt repairs once at Open,
		// when the mesh is often not up yet, and then every interval.
		// At 5 min a container record stayed missing on one machine
		// for the whole of e2e TestDNS's minute. A clean store costs
		// one dirty-bit read per interval.
		c.RepairInterval = 10 * time.Second
	}
	if c.FetchIdle <= 0 {
		c.FetchIdle = 3 * time.Second
	}
	if c.SyncInterval <= 0 {
		c.SyncInterval = time.Second
	}
}

// crdtNamespace is where go-ds-crdt keeps its set and heads in badger; the
// blockstore uses its own prefix, /blocks.
var crdtNamespace = ds.NewKey("/crdt")

// prefetchAncestors bounds the ancestors fetched for one announced head set:
// a day of writes by one busy machine.
const prefetchAncestors = 200_000

// Store is one replica of the shared state.
type Store struct {
	cfg          Config
	name         string
	log          *slog.Logger
	db           *badgerds.Datastore
	bs           blockstore.Blockstore
	crdt         *dscrdt.Datastore
	bcast        *broadcaster
	ex           *blockExchange
	peers        *peers
	st           counters
	watch        *watchHub
	trust        *trustGate // nil without a Verifier
	blockHandler http.Handler

	stop chan struct{}

	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// Open opens (or creates) the replica in cfg.Dir and starts replicating.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.defaults()
	if cfg.Dir == "" {
		return nil, errors.New("open crdt store: no data directory")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", cfg.Dir, err)
	}
	s := &Store{cfg: cfg, name: cfg.Name, log: cfg.Log.With("component", "crdt"), stop: make(chan struct{})}
	if cfg.Gossip != nil {
		s.name = cfg.Gossip.LocalName()
	}
	db, err := openBadger(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s.db = db
	s.bs = blockstore.NewBlockstore(db)
	s.blockHandler = NewBlockHandler(s.bs, s.log)
	unclean, err := uncleanShutdown(cfg.Dir)
	if err != nil {
		db.Close()
		return nil, err
	}
	var resubmit []cid.Cid
	if unclean {
		start := time.Now()
		n, re, err := recoverOrphans(ctx, db, s.bs)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("recover %s after unclean shutdown: %w", cfg.Dir, err)
		}
		resubmit = re
		s.log.Info("recovered after unclean shutdown", "reattached_heads", n, "reprocess", len(re), "took", time.Since(start))
	}
	s.peers = newPeers(s.name, cfg.LiveMachines)
	s.ex = &blockExchange{fetcher: cfg.Fetcher, peers: s.peers, st: &s.st, bs: s.bs, heads: s.Heads, log: s.log, idle: cfg.FetchIdle, hedge: hedgeAfter}
	dag := merkledag.NewDAGService(blockservice.New(s.bs, s.ex))
	s.watch = newWatchHub(s, &s.st, s.log)
	if cfg.Verifier != nil {
		s.trust = &trustGate{v: cfg.Verifier}
	}

	opts := dscrdt.DefaultOptions()
	opts.Logger = stdLogger{s.log}
	opts.DAGSyncerTimeout = cfg.DAGSyncerTimeout
	opts.RebroadcastInterval = cfg.RebroadcastInterval
	opts.RepairInterval = cfg.RepairInterval
	// Heads of one broadcast are walked in parallel, so one head that
	// cannot be fetched does not hold up the others.
	opts.MultiHeadProcessing = true
	opts.PutHook = s.watch.putHook
	opts.DeleteHook = s.watch.deleteHook

	var bc dscrdt.Broadcaster // stays a nil interface when offline
	if cfg.Gossip != nil {
		s.bcast = newBroadcaster(cfg.Gossip, cfg.Topic, &s.st, s.peers, s.log)
		s.bcast.unprocessed = s.unprocessed
		s.bcast.uncovered = s.uncovered
		s.bcast.pendingBranch = s.pendingBranch
		s.bcast.headState = s.headState
		s.bcast.prefetch = s.prefetch
		s.bcast.local = func(ctx context.Context, c cid.Cid) bool {
			ok, err := s.bs.Has(ctx, c)
			return err == nil && ok
		}
		s.bcast.localHeads = s.Heads
		bc = s.bcast
	}
	c, err := dscrdt.New(db, crdtNamespace, dag, bc, opts)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("start go-ds-crdt in %s: %w", cfg.Dir, err)
	}
	s.crdt = c
	s.refreshTrust(ctx)
	if err := s.watch.start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if s.bcast != nil {
		s.bcast.start()
		if len(resubmit) > 0 {
			s.bcast.enqueueReady(s.name, resubmit)
		}
	} else if len(resubmit) > 0 {
		s.log.Warn("unprocessed local blocks wait until the store runs with gossip", "blocks", len(resubmit))
	}
	s.wg.Add(1)
	go s.syncLoop()
	return s, nil
}

// Close stops replication and closes the database; later calls return
// the first one's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Store) close() error {
	close(s.stop)
	s.wg.Wait()
	var errs []error
	if s.crdt != nil {
		errs = append(errs, s.crdt.Close())
	}
	if s.bcast != nil {
		s.bcast.close()
	}
	s.watch.close()
	errs = append(errs, s.db.Close())
	if len(errs) == 0 || errors.Join(errs...) == nil {
		errs = append(errs, markClosed(s.cfg.Dir))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close crdt store in %s: %w", s.cfg.Dir, err)
	}
	return nil
}

// Name is this machine's name in the mesh.
func (s *Store) Name() string { return s.name }

// Dir is the data directory.
func (s *Store) Dir() string { return s.cfg.Dir }

// Stats returns counters since Open.
func (s *Store) Stats() Stats { return s.st.snapshot() }

// BlockHandler serves this replica's blocks to other machines (mount it on
// the machine API).
func (s *Store) BlockHandler() http.Handler { return s.blockHandler }

// Heads returns the current DAG heads.
func (s *Store) Heads(ctx context.Context) []cid.Cid {
	return s.crdt.InternalStats(ctx).Heads
}

// Sync flushes everything written so far to disk.
func (s *Store) Sync(ctx context.Context) error {
	if err := s.db.Sync(ctx, ds.NewKey("/")); err != nil {
		return fmt.Errorf("sync crdt store in %s: %w", s.cfg.Dir, err)
	}
	return nil
}

func (s *Store) syncLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.SyncInterval)
	defer t.Stop()
	var synced uint64 // badger's newest commit version at the last sync
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// Nothing committed since the last pass, nothing to flush or
			// compact: an idle machine skips the msync calls.
			v := s.db.DB.MaxVersion()
			if v == synced {
				continue
			}
			if err := s.Sync(context.Background()); err != nil {
				s.log.Warn("periodic sync", "err", err)
				continue
			}
			synced = v
			if _, err := compactIfNeeded(s.db, badgerOptions().NumLevelZeroTables); err != nil {
				s.log.Warn("periodic compaction", "err", err)
			}
		}
	}
}

// unprocessed returns the heads go-ds-crdt has not merged yet.
func (s *Store) unprocessed(ctx context.Context, heads []cid.Cid) []cid.Cid {
	out := heads[:0:0]
	for _, c := range heads {
		// go-ds-crdt's "processed block" marker (pinned version v0.6.8).
		k := crdtNamespace.ChildString("b").ChildString(dshelp.MultihashToDsKey(c.Hash()).String())
		ok, err := s.db.Has(ctx, k)
		if err != nil || !ok {
			out = append(out, c)
		}
	}
	return out
}

// prefetch stores the missing heads and all their missing ancestors,
// asking the announcing machine first, and returns how many heads are
// still missing.
func (s *Store) prefetch(ctx context.Context, from string, heads []cid.Cid) int {
	var missing []cid.Cid
	for _, c := range heads {
		if ok, err := s.bs.Has(ctx, c); err == nil && !ok {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return 0
	}
	start := time.Now()
	left := s.ex.fetch(ctx, missing, prefetchAncestors, from, func(b blocks.Block) bool {
		if err := s.bs.Put(ctx, b); err != nil {
			s.log.Warn("store fetched head", "cid", b.Cid(), "err", err)
		}
		return true
	})
	s.log.Debug("prefetched heads", "from", from, "heads", len(missing), "missing", left, "took", time.Since(start))
	return left
}

// getRaw, putRaw, deleteRaw and queryRaw are the untyped layer under the
// records API.
func (s *Store) getRaw(ctx context.Context, key string) ([]byte, error) {
	v, err := s.crdt.Get(ctx, ds.NewKey(key))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, ErrNotFound
	}
	return v, err
}

func (s *Store) putRaw(ctx context.Context, key string, v []byte) error {
	return s.crdt.Put(ctx, ds.NewKey(key), v)
}

func (s *Store) deleteRaw(ctx context.Context, key string) error {
	return s.crdt.Delete(ctx, ds.NewKey(key))
}

type rawEntry struct {
	Key   string
	Value []byte
}

func (s *Store) queryRaw(ctx context.Context, prefix string) ([]rawEntry, error) {
	res, err := s.crdt.Query(ctx, query.Query{Prefix: prefix})
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", prefix, err)
	}
	defer res.Close()
	var out []rawEntry
	for r := range res.Next() {
		if r.Error != nil {
			return nil, fmt.Errorf("query %q: %w", prefix, r.Error)
		}
		out = append(out, rawEntry{Key: r.Key, Value: r.Value})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Digest is a hash over every key and value, to compare replicas.
func (s *Store) Digest(ctx context.Context) (string, error) {
	all, err := s.queryRaw(ctx, "/")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, e := range all {
		h.Write([]byte(e.Key))
		h.Write([]byte{0})
		h.Write(e.Value)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
