package crdttest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/gossip/gossiptest"
)

// Open returns a store alone on its machine, in a directory of the
// test's, closed when the test ends. It is the real engine (badger and
// go-ds-crdt), not a map: what a consumer sees is what it will see in
// production, at about 0.1 s per store.
func Open(t testing.TB, name string) *crdt.Store {
	t.Helper()
	return open(t, crdt.Config{Dir: filepath.Join(t.TempDir(), name), Name: name})
}

// Cluster is several replicas of one state carried by a gossiptest hub;
// each serves its blocks on a loopback HTTP server and fetches what it
// lacks from the others, as machines do over the machine API.
type Cluster struct {
	t    testing.TB
	Hub  *gossiptest.Hub
	mu   sync.Mutex
	urls map[string]string
}

// NewCluster starts a hub; replicas join it with Replica.
func NewCluster(t testing.TB) *Cluster {
	c := &Cluster{t: t, Hub: gossiptest.NewHub(100 * time.Millisecond), urls: map[string]string{}}
	t.Cleanup(c.Hub.Close)
	return c
}

// Replica opens machine name's store on the cluster.
func (c *Cluster) Replica(name string) *crdt.Store {
	c.t.Helper()
	fetcher := &crdt.HTTPFetcher{BaseURL: func(m string) (string, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if u, ok := c.urls[m]; ok {
			return u, nil
		}
		return "", fmt.Errorf("machine %q is not in this test cluster", m)
	}}
	s := open(c.t, crdt.Config{Dir: filepath.Join(c.t.TempDir(), name), Name: name, Gossip: c.Hub.Node(name), Fetcher: fetcher})
	srv := httptest.NewServer(s.BlockHandler())
	c.t.Cleanup(srv.Close)
	c.mu.Lock()
	c.urls[name] = srv.URL
	c.mu.Unlock()
	return s
}

func open(t testing.TB, cfg crdt.Config) *crdt.Store {
	t.Helper()
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := crdt.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open a test store in %s: %v", cfg.Dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
