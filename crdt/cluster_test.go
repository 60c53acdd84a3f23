package crdt

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	blocks "github.com/ipfs/go-block-format"

	"github.com/uncloud-mesh/uncloud/gossip/gossiptest"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/record"
)

// testCluster is N replicas over a gossiptest.Hub, each serving its blocks over an
// httptest server on loopback and fetching over HTTPFetcher.
type testCluster struct {
	t      *testing.T
	hub    *gossiptest.Hub
	names  []string
	dirs   map[string]string
	stores map[string]*atomic.Pointer[Store]
	urls   map[string]string
	srvs   []*httptest.Server
	log    *slog.Logger
	// tamper names a machine whose served blocks are corrupted in transit.
	tamper atomic.Pointer[string]
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CRDT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{
		t: t, hub: gossiptest.NewHub(200 * time.Millisecond),
		dirs: map[string]string{}, stores: map[string]*atomic.Pointer[Store]{}, urls: map[string]string{},
		log: testLogger(t),
	}
	root := t.TempDir()
	for i := range n {
		name := fmt.Sprintf("m%d", i+1)
		c.names = append(c.names, name)
		c.dirs[name] = filepath.Join(root, name)
		p := &atomic.Pointer[Store]{}
		c.stores[name] = p
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s := p.Load()
			if s == nil {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			s.BlockHandler().ServeHTTP(w, r)
		}))
		c.srvs = append(c.srvs, srv)
		c.urls[name] = srv.URL
	}
	for _, name := range c.names {
		c.start(name)
	}
	t.Cleanup(c.close)
	return c
}

// partitionedFetcher refuses fetches across a partition, like the network.
// It also corrupts every block from the machine named by tamper.
type partitionedFetcher struct {
	self   string
	hub    *gossiptest.Hub
	http   *HTTPFetcher
	tamper *atomic.Pointer[string]
}

func (f *partitionedFetcher) FetchBlocks(ctx context.Context, m string, req FetchRequest) (<-chan blocks.Block, error) {
	if !f.hub.Connected(f.self, m) {
		return nil, fmt.Errorf("machine %q unreachable", m)
	}
	ch, err := f.http.FetchBlocks(ctx, m, req)
	if err != nil {
		return nil, err
	}
	if t := f.tamper.Load(); t == nil || *t != m {
		return ch, nil
	}
	out := make(chan blocks.Block)
	go func() {
		defer close(out)
		for b := range ch {
			data := append([]byte(nil), b.RawData()...)
			data[len(data)/2] ^= 0xff
			bad, _ := blocks.NewBlockWithCid(data, b.Cid())
			select {
			case out <- bad:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func (c *testCluster) start(name string) *Store {
	c.t.Helper()
	c.hub.SetDown(name, false)
	g := c.hub.Node(name)
	fetcher := &partitionedFetcher{self: name, hub: c.hub, tamper: &c.tamper, http: &HTTPFetcher{
		BaseURL: func(m string) (string, error) {
			u, ok := c.urls[m]
			if !ok {
				return "", fmt.Errorf("unknown machine %q", m)
			}
			return u, nil
		},
	}}
	s, err := Open(context.Background(), Config{
		Dir: c.dirs[name], Gossip: g, Fetcher: fetcher, Log: c.log.With("m", name),
		RebroadcastInterval: 2 * time.Second, FetchIdle: time.Second, DAGSyncerTimeout: 5 * time.Second,
	})
	if err != nil {
		c.t.Fatalf("open %s: %v", name, err)
	}
	c.stores[name].Store(s)
	return s
}

// stop takes a replica offline (closes it).
func (c *testCluster) stop(name string) {
	c.t.Helper()
	c.hub.SetDown(name, true)
	if s := c.stores[name].Swap(nil); s != nil {
		if err := s.Close(); err != nil {
			c.t.Errorf("close %s: %v", name, err)
		}
	}
}

func (c *testCluster) s(name string) *Store { return c.stores[name].Load() }

func (c *testCluster) close() {
	for _, name := range c.names {
		if s := c.stores[name].Swap(nil); s != nil {
			s.Close()
		}
	}
	c.hub.Close()
	for _, srv := range c.srvs {
		srv.Close()
	}
}

// waitConverged waits until every running replica has the same digest and
// returns it.
func (c *testCluster) waitConverged(timeout time.Duration) string {
	c.t.Helper()
	var last map[string]string
	var digest string
	ok := waitFor(timeout, func() bool {
		last = map[string]string{}
		var first string
		same := true
		for _, name := range c.names {
			s := c.s(name)
			if s == nil {
				continue
			}
			d, err := s.Digest(context.Background())
			if err != nil {
				c.t.Fatalf("digest %s: %v", name, err)
			}
			last[name] = d[:12]
			if first == "" {
				first, digest = d, d
			} else if d != first {
				same = false
			}
		}
		return same
	})
	if !ok {
		var first *Store
		for _, name := range c.names {
			if s := c.s(name); s != nil {
				if first == nil {
					first = s
				} else {
					diffStores(c.t, first, s)
				}
			}
		}
		c.t.Fatalf("replicas did not converge in %s: %v", timeout, last)
	}
	return digest
}

// waitFor polls cond until it holds or timeout (stretched under qemu-user,
// see testkit.Timeout) passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(testkit.Timeout(timeout))
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func svc(name, mode string) *record.Service { return &record.Service{Name: name, Mode: mode} }

func mustPut(t testing.TB, s *Store, r Record) {
	t.Helper()
	if err := s.Put(context.Background(), r.Key(), r); err != nil {
		t.Fatalf("put %s on %s: %v", r.Key(), s.Name(), err)
	}
}

// diffStores reports keys whose values differ between two replicas.
func diffStores(t *testing.T, a, b *Store) {
	t.Helper()
	ea, _ := a.queryRaw(context.Background(), "/")
	eb, _ := b.queryRaw(context.Background(), "/")
	ma := map[string]string{}
	for _, e := range ea {
		ma[e.Key] = string(e.Value)
	}
	n := 0
	for _, e := range eb {
		if v, ok := ma[e.Key]; !ok || v != string(e.Value) {
			if n++; n <= 5 {
				t.Logf("%s: %s has %q, %s has %q", e.Key, a.Name(), v, b.Name(), e.Value)
			}
		}
		delete(ma, e.Key)
	}
	for k, v := range ma {
		if n++; n <= 10 {
			t.Logf("%s: only %s has it: %q", k, a.Name(), v)
		}
	}
	t.Logf("%d differences between %s (%d keys) and %s (%d keys)", n, a.Name(), len(ea), b.Name(), len(eb))
}
