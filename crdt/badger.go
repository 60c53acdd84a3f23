package crdt

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4/options"
	badgerds "github.com/ipfs/go-ds-badger4"
)

// badgerOptions returns badger settings for a 1 GB Raspberry Pi on 32-bit ARM.
// badger's defaults map about 2 GB of files and keep ~165 MB resident; a
// 32-bit process has 3 GB of address space and the Pi has 1 GB of RAM shared
// with Docker. Our data set is small (thousands of records of < 1 KB, DAG
// blocks of a few hundred bytes), so small buffers cost little speed.
func badgerOptions() badgerds.Options {
	o := badgerds.DefaultOptions
	// 2 MB memtables instead of 64 MB: each memtable is an in-memory
	// skiplist arena plus an mmapped WAL file of that size, and flushing one
	// builds an L0 table in buffers of about that size again. The arena is
	// Go heap: a fresh one reuses freed heap, which the runtime zeroes, so
	// every flush makes the whole arena resident (4 MB arenas were 5 MB of
	// an idle agent's heap). An idle network writes a few KB a minute;
	// 10,000 records with their DAG blocks are ~6 MB, i.e. three flushes.
	o.MemTableSize = 2 << 20
	// 2 memtables (one active, one flushing) instead of 5: 4 MB, not 320 MB.
	o.NumMemtables = 2
	// Fewer L0 tables before compaction and before stalling writes: bounds
	// both memory (tables' indexes) and read amplification.
	o.NumLevelZeroTables = 2
	o.NumLevelZeroTablesStall = 8
	// 2 MB SSTables and a 10 MB base level (defaults) suit a small store.
	o.BaseTableSize = 2 << 20
	o.BaseLevelSize = 10 << 20
	// 2 MB tables on every level, not twice as large per level, and
	// memtables no larger than a table: then every table builder fits in
	// the first buffer of its allocator (2 × BaseTableSize; the pool hands
	// the same allocators to every builder). On 32-bit ARM (and 386) a
	// builder that outgrows that buffer corrupts its own blocks: ristretto's
	// z.Allocator (v2.1.0, which badger v4.5.1 uses; a build with badger
	// v4.9.6 crashed the same way) computes the next buffer's position as
	// uint64((bufIdx+1)<<32) with a 32-bit int, which is 0, so allocations
	// start over at the first buffer and overwrite live data; compaction
	// then panics reading the table (seen under qemu-arm and natively as
	// GOARCH=386 with 4 MB memtables, and after ~100 MB of writes with
	// 2 MB memtables and the default multiplier). Many 2 MB tables at the
	// deeper levels cost nothing at our store's size.
	o.TableSizeMultiplier = 1
	// No background compactors: each one wakes every 50 ms whether or not
	// there is anything to do, which alone cost an idle agent about 1 % of
	// a core (measured: 1.2 % for a bare badger with two). The Store
	// compacts from its once-a-second sync loop instead, only when badger's
	// own level scores ask for it (compactIfNeeded).
	o.NumCompactors = 0
	// 16 MB value-log files instead of 1 GB: each is mmapped, and on 32-bit
	// ARM a 1 GB mapping (2 GB on write) does not fit in the address space.
	o.ValueLogFileSize = 16 << 20
	o.ValueLogMaxEntries = 100_000
	// Values up to 4 KB stay in the LSM tree next to their keys (records and
	// DAG blocks are far smaller), so reads never touch the value log and
	// value-log GC has little to do. badger requires it to be at most 15% of
	// the memtable (300 KB here).
	o.ValueThreshold = 4 << 10
	// No compression: with Snappy the table builder's compression buffers
	// alone held ~24 MB of heap (measured with 10,000 records), while the
	// whole store is a few MB on disk.
	o.Compression = options.None
	// No block cache and no index cache. Without compression or
	// encryption a block is read in place from the table's mmap (no copy,
	// no decode), so a cache would only keep pointers into that same
	// mapping; and badger consults the index cache for encrypted tables
	// only (the index of a plain table is always in memory). Each cache is
	// a ristretto instance: counters, a 32,768-slot set buffer, and a
	// goroutine whose TTL ticker wakes every 2.5 s whether or not anything
	// is cached.
	o.BlockCacheSize = 0
	o.IndexCacheSize = 0
	// Keep only the newest version of each key: go-ds-crdt keeps its own
	// history in the DAG; older badger versions are pure waste.
	o.NumVersionsToKeep = 1
	// go-ds-crdt does not use optimistic transactions; conflict detection
	// keeps a per-transaction read set in memory for nothing.
	o.DetectConflicts = false
	// No expvar metrics: they are global and we export our own.
	o.MetricsEnabled = false
	// SyncWrites off: see "Durability" in the package doc; Store flushes
	// every second instead.
	o.SyncWrites = false
	// Compact L0 on close so a restart opens fewer tables.
	o.CompactL0OnClose = true
	// Value-log GC: every 10 minutes, reclaiming files that are 50% garbage.
	o.GcInterval = 10 * time.Minute
	o.GcDiscardRatio = 0.5
	o.GcSleep = 0
	return o
}

// compactIfNeeded runs a compaction when some level is over its target
// (badger's score ≥ 1, as its own compactors would decide) or level 0 has
// as many tables as NumLevelZeroTables. Flatten leaves the store in one
// level: for a store of a few MB (ours) that is both the cheapest to read
// and cheap to rewrite; a store of hundreds of MB would pay more write
// amplification than badger's leveled compaction.
func compactIfNeeded(db *badgerds.Datastore, l0Tables int) (bool, error) {
	need := false
	for _, l := range db.DB.Levels() {
		if l.Score >= 1 || (l.Level == 0 && l.NumTables >= l0Tables) {
			need = true
		}
	}
	if !need {
		return false, nil
	}
	if err := db.DB.Flatten(1); err != nil {
		return true, fmt.Errorf("compact badger: %w", err)
	}
	return true, nil
}

func openBadger(dir string) (*badgerds.Datastore, error) {
	o := badgerOptions()
	if err := drainLargerWAL(dir, o); err != nil {
		return nil, err
	}
	db, err := badgerds.NewDatastore(dir, &o)
	if err != nil {
		return nil, fmt.Errorf("open badger in %s: %w", dir, err)
	}
	return db, nil
}

// drainLargerWAL flushes what a store written with larger memtables left
// in its write-ahead logs. badger replays a WAL (a .mem file, twice the
// memtable size of the version that wrote it) into a memtable of the
// current size, and panics when it does not fit ("Arena too small"): an
// agent upgraded from 4 MB memtables after a kill -9 or power loss would
// never start again. So such a store is opened once with the size it was
// written with and closed, which flushes the memtables into tables and
// removes the logs. Tables of that size are built then too, so the
// builders stay inside their first buffer (see badgerOptions).
func drainLargerWAL(dir string, o badgerds.Options) error {
	mems, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil {
		return fmt.Errorf("list badger logs in %s: %w", dir, err)
	}
	var written int64
	for _, m := range mems {
		if fi, err := os.Stat(m); err == nil {
			written = max(written, fi.Size()/2)
		}
	}
	if written <= o.MemTableSize {
		return nil
	}
	o.MemTableSize = written
	o.BaseTableSize = max(o.BaseTableSize, written)
	db, err := badgerds.NewDatastore(dir, &o)
	if err != nil {
		return fmt.Errorf("open badger in %s with its earlier %d-byte memtables: %w", dir, written, err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("flush badger's earlier %d-byte memtables in %s: %w", written, dir, err)
	}
	return nil
}
