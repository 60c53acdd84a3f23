package crdt

import (
	"context"
	"errors"
	"fmt"
	"github.com/uncloud-mesh/uncloud/record"
	"sync"
	"testing"
	"time"
)

func TestWriteSeenByAll(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d replicas", n), func(t *testing.T) {
			c := newTestCluster(t, n)
			ctx := context.Background()
			m := &record.Machine{ID: "m1", Name: "alpha", Subnet: "10.210.1.0/24"}
			mustPut(t, c.s("m1"), m)
			for _, name := range c.names {
				ok := waitFor(5*time.Second, func() bool {
					r, err := c.s(name).Get(ctx, m.Key())
					return err == nil && r.(*record.Machine).Subnet == m.Subnet
				})
				if !ok {
					t.Fatalf("%s never saw %s", name, m.Key())
				}
			}
		})
	}
}

func TestConcurrentWritesConverge(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := context.Background()
	// Cut everyone apart so the writes are truly concurrent.
	c.hub.Partition([]string{"m1"}, []string{"m2"}, []string{"m3"})
	var wg sync.WaitGroup
	for i, name := range c.names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 5 + i { // different branch heights
				mustPut(t, c.s(name), &record.Service{Name: "web", Mode: fmt.Sprintf("%s-%d", name, j)})
			}
		}()
	}
	wg.Wait()
	c.hub.Heal()
	c.waitConverged(10 * time.Second)
	var want string
	for _, name := range c.names {
		r, err := c.s(name).Get(ctx, "/services/web")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := r.(*record.Service).Mode
		if want == "" {
			want = got
		} else if got != want {
			t.Fatalf("%s has %q, others %q", name, got, want)
		}
	}
	// The tallest branch (m3 wrote 7 times) wins, not the last writer.
	if want != "m3-6" {
		t.Errorf("winner %q, want the tallest branch's m3-6", want)
	}
}

func TestDeleteStaysDeleted(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := context.Background()
	for i := range 20 {
		mustPut(t, c.s("m1"), &record.Container{MachineID: "m1", ID: fmt.Sprintf("c%d", i), Name: "x"})
	}
	c.waitConverged(5 * time.Second)
	for i := range 10 {
		if err := c.s("m1").Delete(ctx, fmt.Sprintf("/containers/m1/c%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged(5 * time.Second)
	// More traffic, a restart, and anti-entropy rounds must not resurrect.
	mustPut(t, c.s("m2"), &record.Machine{ID: "m2", Name: "b"})
	c.stop("m3")
	c.start("m3")
	c.waitConverged(5 * time.Second)
	time.Sleep(600 * time.Millisecond)
	for _, name := range c.names {
		recs, err := c.s(name).List(ctx, "/containers/m1/")
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 10 {
			t.Errorf("%s lists %d containers, want 10", name, len(recs))
		}
		if _, err := c.s(name).Get(ctx, "/containers/m1/c3"); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: deleted c3: err %v", name, err)
		}
	}
}

func TestPartitionHeal(t *testing.T) {
	c := newTestCluster(t, 5)
	ctx := context.Background()
	left, right := []string{"m1", "m2"}, []string{"m3", "m4", "m5"}
	c.hub.Partition(left, right)
	writes := map[string]bool{}
	for round := range 20 {
		for _, side := range [][]string{left, right} {
			for _, name := range side {
				// different keys: each machine its own container
				mustPut(t, c.s(name), &record.Container{MachineID: name, ID: fmt.Sprintf("c%d", round), Name: name})
				writes[fmt.Sprintf("/containers/%s/c%d", name, round)] = true
			}
			// same key on both sides
			mustPut(t, c.s(side[0]), &record.Service{Name: fmt.Sprintf("s%d", round%3), Mode: side[0]})
		}
	}
	c.hub.Heal()
	start := time.Now()
	c.waitConverged(10 * time.Second)
	t.Logf("healed in %s", time.Since(start))
	for _, name := range c.names {
		recs, err := c.s(name).List(ctx, "/containers/")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, r := range recs {
			got[r.Key()] = true
		}
		for k := range writes {
			if !got[k] {
				t.Errorf("%s lost %s", name, k)
			}
		}
		svcs, _ := c.s(name).List(ctx, "/services/")
		if len(svcs) != 3 {
			t.Errorf("%s has %d services, want 3", name, len(svcs))
		}
	}
}
