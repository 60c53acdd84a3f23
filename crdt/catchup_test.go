package crdt

import (
	"context"
	"fmt"
	"github.com/uncloud-mesh/uncloud/record"
	"testing"
	"time"
)

// TestOfflineCatchUp: a replica is offline during 10,000 writes and must
// catch up after it returns (streamed ancestor fetch, not one round trip per
// DAG level).
func TestOfflineCatchUp(t *testing.T) {
	n := 10_000
	if testing.Short() {
		n = 1_000
	}
	c := newTestCluster(t, 3)
	ctx := context.Background()
	mustPut(t, c.s("m1"), &record.Machine{ID: "m1", Name: "a"})
	c.waitConverged(5 * time.Second)
	c.stop("m3")

	start := time.Now()
	w := c.s("m1")
	for i := range n {
		mustPut(t, w, &record.Container{MachineID: "m1", ID: fmt.Sprintf("c%05d", i), Name: "x"})
	}
	t.Logf("%d writes on m1 in %s (%.0f/s)", n, time.Since(start), float64(n)/time.Since(start).Seconds())
	want := c.waitConverged(30 * time.Second) // m1 and m2

	start = time.Now()
	back := c.start("m3")
	ok := waitFor(60*time.Second, func() bool {
		d, err := back.Digest(ctx)
		return err == nil && d == want
	})
	took := time.Since(start)
	if !ok {
		diffStores(t, c.s("m1"), back)
		recs, _ := back.List(ctx, "/containers/")
		t.Fatalf("m3 did not catch up in %s: has %d of %d containers; stats %+v", took, len(recs), n, back.Stats())
	}
	t.Logf("m3 caught up with %d writes in %s; stats %+v", n, took, back.Stats())
	// One writer wrote a chain: every replica must end with one head, not
	// one per concurrently processed broadcast.
	for _, name := range c.names {
		if h := c.s(name).Heads(ctx); len(h) > 2 {
			t.Errorf("%s has %d heads after a single writer's burst", name, len(h))
		}
	}
}
