package orchestrate

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
)

// countingRecords counts the reads of a whole kind of record (List), by
// prefix.
type countingRecords struct {
	Records
	mu    sync.Mutex
	lists map[string]int
}

func (c *countingRecords) List(ctx context.Context, prefix string) ([]crdt.Record, error) {
	c.mu.Lock()
	c.lists[prefix]++
	c.mu.Unlock()
	return c.Records.List(ctx, prefix)
}

func (c *countingRecords) fullReads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lists[record.ServicesPrefix] + c.lists[record.ContainersPrefix]
}

// TestDeployReadsStateOnce: the plan of a deploy of N services reads the
// service and container records once each, whatever N, and plans what it
// planned when each step read them again.
func TestDeployReadsStateOnce(t *testing.T) {
	for _, n := range []int{1, 3, 6} {
		t.Run(fmt.Sprint(n, " services"), func(t *testing.T) {
			r := newRig(t, newFleet(), Config{})
			twoReplicas(t, r)
			r.run(t, api.RunRequest{Name: "db", Image: "pg", Volumes: []string{"pgdata:/d"}, Machines: []string{"m2"}})
			var files []api.RunRequest
			for i := range n {
				s := api.RunRequest{Name: fmt.Sprint("s", i), Image: "app:1", Replicas: 2, Project: "blog"}
				switch i % 3 {
				case 1:
					s.Volumes = []string{"pgdata:/d"} // shares db's volume: pinned to m2
				case 2:
					s.Mode, s.Replicas = "global", 0
				}
				files = append(files, s)
			}
			cr := &countingRecords{Records: r.o.store, lists: map[string]int{}}
			r.o.store = cr
			evs, err := deploy(r, api.DeployRequest{Services: files, DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := cr.fullReads(); got != 2 {
				t.Errorf("the plan listed services or containers %d times (%v), want 2", got, cr.lists)
			}
			for _, e := range evs {
				if strings.HasPrefix(e, "plan s1 create") && !strings.HasSuffix(e, " m2") {
					t.Errorf("%q: s1 shares db's volume on m2", e)
				}
			}
			if want := wantDryRunPlan(n); !slices.Equal(evs, want) {
				t.Errorf("plan\n%s\nwant\n%s", strings.Join(evs, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// wantDryRunPlan is the plan that the deploy made when each step read
// the state again: s0 on the two emptiest machines, s1 twice on m2
// (db's volume), s2 on every machine, and again.
func wantDryRunPlan(n int) []string {
	on := [][]string{{"m3", "m1"}, {"m2", "m2"}, {"m3", "m1", "m2"}}
	var out []string
	for i := range n {
		for _, m := range on[i%3] {
			out = append(out, fmt.Sprintf("plan s%d.blog create %s", i, m))
		}
	}
	return out
}
