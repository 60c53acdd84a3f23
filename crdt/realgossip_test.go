package crdt

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/gossip"
	"github.com/uncloud-mesh/uncloud/record"
)

// TestRealGossip wires real gossip.Node instances (memberlist on
// 127.0.0.x, production timings) to stores: writes on every machine reach
// every machine through gossip's broadcast and HTTP block fetching.
func TestRealGossip(t *testing.T) {
	const n = 3
	ctx := context.Background()
	key := []byte("0123456789abcdef0123456789abcdef")
	urls := map[string]string{}
	var stores [n]atomic.Pointer[Store]
	var nodes [n]*gossip.Node
	for i := range n {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if s := stores[i].Load(); s != nil {
				s.BlockHandler().ServeHTTP(w, r)
				return
			}
			http.Error(w, "down", http.StatusServiceUnavailable)
		}))
		t.Cleanup(srv.Close)
		cfg := gossip.Config{
			Name:     fmt.Sprintf("g%d", i+1),
			BindAddr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(40 + i)}), 0),
			Keys:     [][]byte{key},
			Logger:   testLogger(t),
		}
		if i > 0 {
			cfg.Seeds = []string{nodes[0].Addr().String()}
		}
		node, err := gossip.New(ctx, cfg)
		if err != nil {
			t.Fatalf("gossip %s: %v", cfg.Name, err)
		}
		t.Cleanup(func() { node.Close() })
		nodes[i] = node
		urls[cfg.Name] = srv.URL
	}
	for i, node := range nodes {
		live := func() []string {
			var out []string
			for _, m := range node.Members() {
				if m.State == gossip.Alive {
					out = append(out, m.Name)
				}
			}
			return out
		}
		s, err := Open(ctx, Config{
			Dir: filepath.Join(t.TempDir(), node.LocalName()), Gossip: node, LiveMachines: live, Log: testLogger(t),
			Fetcher: &HTTPFetcher{BaseURL: func(m string) (string, error) { return urls[m], nil }},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i].Store(s)
	}
	if !waitFor(10*time.Second, func() bool { return len(nodes[0].Members()) == n }) {
		t.Fatalf("gossip cluster did not form: %d members", len(nodes[0].Members()))
	}
	for i := range n {
		for j := range 20 {
			s := stores[i].Load()
			mustPut(t, s, &record.Container{MachineID: s.Name(), ID: fmt.Sprintf("c%d", j), Name: "x"})
		}
	}
	var digests [n]string
	ok := waitFor(10*time.Second, func() bool {
		for i := range n {
			digests[i], _ = stores[i].Load().Digest(ctx)
		}
		return digests[0] == digests[1] && digests[1] == digests[2]
	})
	if !ok {
		for i := range n {
			t.Logf("%s: %+v members %d", stores[i].Load().Name(), stores[i].Load().Stats(), len(nodes[i].Members()))
		}
		t.Fatalf("no convergence over real gossip: %v", digests)
	}
	for i := range n {
		if l, _ := stores[i].Load().List(ctx, "/containers/"); len(l) != n*20 {
			t.Errorf("%s has %d containers, want %d", stores[i].Load().Name(), len(l), n*20)
		}
	}
}
