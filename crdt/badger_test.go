package crdt

import (
	"context"
	"fmt"
	"testing"

	ds "github.com/ipfs/go-datastore"
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
