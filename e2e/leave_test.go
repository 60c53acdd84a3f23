package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/internal/testkit"
)

// TestLeave: m2 of three machines leaves from itself. Without --yes and a
// terminal it refuses and stays; with --yes m1 or m3 removes it, its
// agent stops, and m1 and m3 list only each other. Started again with
// its old keys, m2 is no one's peer and no one lists it.
func TestLeave(t *testing.T) {
	ctx := context.Background()
	f := form(ctx, t, 3, nil)
	f.waitAllAlive(ctx, t, 60*time.Second)

	if out, err := f.uncloud(ctx, t, 1, "leave"); err == nil || !strings.Contains(out+err.Error(), "--yes") ||
		!strings.Contains(out, "m2 leaves network") {
		t.Fatalf("leave without --yes: %v\n%s", err, out)
	}
	if !f.procs[1].Alive() || len(f.machines(ctx, t, 0)) != 3 {
		t.Fatal("a refused leave changed something")
	}

	start := time.Now()
	out, err := f.uncloud(ctx, t, 1, "leave", "--yes")
	t.Logf("leave on m2 took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("leave: %v", err)
	}
	select {
	case <-f.procs[1].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("m2's agent still runs after leave")
	}

	stale := func(i int) error {
		var names []string
		for _, m := range f.machines(ctx, t, i) {
			names = append(names, m.Name)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"m1", "m3"}) {
			return fmt.Errorf("%s lists %v", f.hosts[i].Name, names)
		}
		for _, p := range f.status(ctx, t, i).Peers {
			if strings.Contains(strings.Join(p.AllowedIPs, ","), "10.210.2.") {
				return fmt.Errorf("%s still has m2 as a peer: %+v", f.hosts[i].Name, p)
			}
		}
		return nil
	}
	for _, i := range []int{0, 2} {
		testkit.Eventually(t, f.hosts[i].Name+" forgetting m2", 30*time.Second, func() error { return stale(i) })
	}
	t.Logf("m1 and m3 list only each other %v after leave started", time.Since(start).Round(100*time.Millisecond))

	// Back with its old keys: refused. It announces itself and probes its
	// old peers; each rejects the probes (its STUN counter of rejected
	// packets says so) and none takes it back. Waiting for two rejections
	// on each (a first attempt and a retry), not a fixed time, sees m2's
	// attempts through however slowly a loaded machine runs them.
	rejected := func(i int) uint64 {
		ms, err := f.mesh(ctx, t, i)
		if err != nil {
			t.Fatalf("mesh on %s: %v", f.hosts[i].Name, err)
		}
		return ms.STUN.Rejected
	}
	before := map[int]uint64{0: rejected(0), 2: rejected(2)}
	f.startAgent(ctx, t, 1, "agent")
	restart := time.Now()
	for _, i := range []int{0, 2} {
		testkit.Eventually(t, f.hosts[i].Name+" rejecting 2 probes of m2 back on its old keys", 30*time.Second, func() error {
			if err := stale(i); err != nil {
				t.Fatalf("with m2's agent back on its old keys: %v", err)
			}
			if n := rejected(i) - before[i]; n < 2 {
				return fmt.Errorf("%d rejected", n)
			}
			return nil
		})
	}
	t.Logf("m1 and m3 rejected m2 on its old keys %v after its agent was up", time.Since(restart).Round(100*time.Millisecond))
	if ms := f.machines(ctx, t, 1); len(ms) == 3 {
		for _, m := range ms {
			if m.Name != "m2" && m.State == "alive" {
				t.Errorf("the removed m2 sees %s alive: %+v", m.Name, m)
			}
		}
	}
}
