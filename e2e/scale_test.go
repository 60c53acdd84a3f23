package e2e

import (
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// TestTenMachineMesh starts ten machines (alternating kernel and netstack
// mode) in a full mesh and checks that the first reaches every other one,
// and every other one reaches the first. It also keeps the lab honest
// about the cost of a host, which later multi-machine tests depend on.
func TestTenMachineMesh(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	modes := make([]mode, 10)
	for i := range modes {
		modes[i] = kernel
		if i%2 == 1 {
			modes[i] = netstack
		}
	}
	start := time.Now()
	nodes := startMesh(t, l, modes...)
	t.Logf("10 machines up in %v", time.Since(start))
	var wg sync.WaitGroup
	for _, n := range nodes[1:] {
		for _, pair := range [][2]node{{nodes[0], n}, {n, nodes[0]}} {
			wg.Go(func() {
				if msg, ok := reach(ctx, pair[0], pair[1], 30*time.Second); !ok {
					t.Errorf("%s → %s: %s", pair[0].host.Name, pair[1].host.Name, msg)
				}
			})
		}
	}
	wg.Wait()
	t.Logf("all reached in %v", time.Since(start))
}
