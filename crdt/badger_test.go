package crdt

import (
	"context"
	"fmt"
	"testing"

	ds "github.com/ipfs/go-datastore"
	badgerds "github.com/ipfs/go-ds-badger4"
)

// TestBuildersFitFirstBuffer pins the options that keep badger's table
// builders inside the first buffer of their allocator, without which
// compaction corrupts tables on 32-bit ARM (see badgerOptions).
func TestBuildersFitFirstBuffer(t *testing.T) {
	o := badgerOptions()
	if o.MemTableSize > o.BaseTableSize {
		t.Errorf("MemTableSize %d > BaseTableSize %d: a level-0 table outgrows its builder's first buffer", o.MemTableSize, o.BaseTableSize)
	}
	if o.TableSizeMultiplier != 1 {
		t.Errorf("TableSizeMultiplier %d: deeper levels' builders get allocators sized for the base level", o.TableSizeMultiplier)
	}
}

// TestCompactIfNeeded: with badger's background compactors off, the
// store's own compaction must keep level 0 below the write stall under a
// steady write load, do nothing when idle, and lose nothing.
func TestCompactIfNeeded(t *testing.T) {
	ctx := context.Background()
	db, err := openBadger(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	opts := badgerOptions()
	if did, err := compactIfNeeded(db, opts.NumLevelZeroTables); err != nil || did {
		t.Fatalf("empty store: compacted=%v err=%v, want nothing to do", did, err)
	}
	value := make([]byte, 1000)
	const n = 24_000 // ≈ 24 MB: twelve memtables' worth
	compactions := 0
	for i := range n {
		if err := db.Put(ctx, ds.NewKey(fmt.Sprintf("/k/%06d", i)), value); err != nil {
			t.Fatal(err)
		}
		if i%500 == 499 {
			if err := db.Sync(ctx, ds.NewKey("/")); err != nil {
				t.Fatal(err)
			}
			did, err := compactIfNeeded(db, opts.NumLevelZeroTables)
			if err != nil {
				t.Fatal(err)
			}
			if did {
				compactions++
			}
			if l0 := db.DB.Levels()[0].NumTables; l0 >= opts.NumLevelZeroTablesStall {
				t.Fatalf("after %d writes level 0 has %d tables, the stall is at %d", i+1, l0, opts.NumLevelZeroTablesStall)
			}
		}
	}
	if compactions == 0 {
		t.Fatal("24 MB written through 2 MB memtables and never compacted")
	}
	if did, err := compactIfNeeded(db, opts.NumLevelZeroTables); err != nil || did {
		t.Errorf("right after a compaction with no writes: compacted=%v err=%v", did, err)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		if _, err := db.Get(ctx, ds.NewKey(fmt.Sprintf("/k/%06d", i))); err != nil {
			t.Errorf("key %d after compactions: %v", i, err)
		}
	}
	t.Logf("%d compactions for %d writes; levels: %+v", compactions, n, db.DB.Levels()[:2])
}

// TestOpenAfterLargerMemtables: a store that an earlier version (4 MB
// memtables) left with 3.4 MB in its write-ahead log, as kill -9 leaves
// it, opens with today's smaller memtables and keeps every key. Replaying
// that log straight into a 2 MB memtable panics inside badger.
func TestOpenAfterLargerMemtables(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w := badgerOptions()
	w.MemTableSize, w.BaseTableSize = 4<<20, 4<<20
	w.BypassLockGuard = true // the abandoned writer must not keep the directory locked
	old, err := badgerds.NewDatastore(dir, &w)
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, 1000)
	const n = 3300
	for i := range n {
		if err := old.Put(ctx, ds.NewKey(fmt.Sprintf("/k/%06d", i)), value); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Sync(ctx, ds.NewKey("/")); err != nil {
		t.Fatal(err)
	}
	// No Close: the writer is abandoned as a killed agent's would be
	// (closed only after the test, when nothing reads its files).
	t.Cleanup(func() { old.Close() })

	db, err := openBadger(dir)
	if err != nil {
		t.Fatalf("open after larger memtables: %v", err)
	}
	defer db.Close()
	for _, i := range []int{0, n / 2, n - 1} {
		if _, err := db.Get(ctx, ds.NewKey(fmt.Sprintf("/k/%06d", i))); err != nil {
			t.Errorf("key %d after the upgrade: %v", i, err)
		}
	}
}
