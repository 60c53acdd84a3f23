package crdt

import (
	"context"
	"fmt"
	"github.com/uncloud-mesh/uncloud/record"
	"testing"
)

// TestChurnGrowth creates and deletes 10,000 records and reports how the
// store and the DAG grow: go-ds-crdt never shrinks, every write is a block
// forever. The figures go to README.md.
func TestChurnGrowth(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 1_000
	}
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, Config{Dir: dir, Name: "solo", Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	size := func(stage string) Size {
		sz, err := s.Size(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%-22s disk %7.2f MB, %6d blocks, %6d keys", stage, float64(sz.DiskBytes)/1e6, sz.Blocks, sz.Keys)
		return sz
	}
	empty := size("empty")
	for i := range n {
		mustPut(t, s, &record.Container{MachineID: "m1", ID: fmt.Sprintf("c%05d", i), Name: "web", Service: "web", Image: "nginx:1.27", Address: "10.210.1.2"})
	}
	full := size(fmt.Sprintf("after %d creates", n))
	for i := range n {
		if err := s.Delete(ctx, fmt.Sprintf("/containers/m1/c%05d", i)); err != nil {
			t.Fatal(err)
		}
	}
	churned := size(fmt.Sprintf("after %d deletes", n))
	if churned.Keys != 0 {
		t.Fatalf("%d keys left after deleting everything", churned.Keys)
	}
	if got := churned.Blocks - empty.Blocks; got != 2*n {
		t.Errorf("%d blocks for %d writes and %d deletes; want one each", got, n, n)
	}
	// Reopen: memtables flushed into SSTables and L0 compacted on close.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(ctx, Config{Dir: dir, Name: "solo", Log: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	churned = size("reopened (compacted)")
	t.Logf("per record created and deleted: %.0f bytes on disk, %.1f blocks; the live state is empty but the store keeps %.0f%% of its full size",
		float64(churned.DiskBytes-empty.DiskBytes)/float64(n), float64(churned.Blocks-empty.Blocks)/float64(n),
		100*float64(churned.DiskBytes)/float64(max(full.DiskBytes, 1)))
}
