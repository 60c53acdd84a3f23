package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	blocks "github.com/ipfs/go-block-format"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/gossip"
)

var benchKey = []byte("converge-bench-key-0123456789abc")

// cluster is n replicas, each a real gossip.Node on 127.0.1.(i+1), a
// crdt.Store, and an HTTP block server on loopback.
type cluster struct {
	log   *slog.Logger
	dir   string
	reps  []*replica
	urls  map[string]string
	cut   atomic.Bool // partition on: side 0 = reps[:split], side 1 = the rest
	split int
}

type replica struct {
	i     int
	name  string
	node  *gossip.Node
	store atomic.Pointer[crdt.Store]
	srv   *http.Server
	// signer and verifier are the store's (nil: unsigned, as before
	// signed records); see signed.go.
	signer   crdt.Signer
	verifier crdt.Verifier
}

func newCluster(ctx context.Context, log *slog.Logger, n int) (*cluster, error) {
	return newClusterWith(ctx, log, n, nil)
}

// newClusterWith forms the gossip cluster, lets prepare (if any) set up
// the replicas before their stores open, and opens the stores.
func newClusterWith(ctx context.Context, log *slog.Logger, n int, prepare func(*cluster) error) (*cluster, error) {
	dir, err := os.MkdirTemp("", "converge-")
	if err != nil {
		return nil, err
	}
	c := &cluster{log: log, dir: dir, urls: map[string]string{}}
	for i := range n {
		r := &replica{i: i, name: fmt.Sprintf("r%02d", i+1)}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			c.close()
			return nil, err
		}
		r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if s := r.store.Load(); s != nil {
				s.BlockHandler().ServeHTTP(w, req)
				return
			}
			http.Error(w, "down", http.StatusServiceUnavailable)
		})}
		go r.srv.Serve(ln)
		c.urls[r.name] = "http://" + ln.Addr().String()
		cfg := gossip.Config{
			Name:     r.name,
			BindAddr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), 0),
			Keys:     [][]byte{benchKey},
			Logger:   log,
		}
		if i > 0 {
			cfg.Seeds = []string{c.reps[0].node.Addr().String()}
		}
		r.node, err = gossip.New(ctx, cfg)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("gossip %s: %w", r.name, err)
		}
		c.reps = append(c.reps, r)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range c.reps {
		for len(r.node.Members()) < n {
			if time.Now().After(deadline) {
				c.close()
				return nil, fmt.Errorf("gossip did not form: %s sees %d of %d", r.name, len(r.node.Members()), n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if prepare != nil {
		if err := prepare(c); err != nil {
			c.close()
			return nil, err
		}
	}
	for _, r := range c.reps {
		if err := c.open(ctx, r); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

func (c *cluster) side(name string) int {
	for _, r := range c.reps {
		if r.name == name {
			if r.i < c.split {
				return 0
			}
			return 1
		}
	}
	return -1
}

func (c *cluster) blocked(a, b string) bool { return c.cut.Load() && c.side(a) != c.side(b) }

func (c *cluster) open(ctx context.Context, r *replica) error {
	g := &cutGossip{Node: r.node, c: c}
	s, err := crdt.Open(ctx, crdt.Config{
		Dir:    filepath.Join(c.dir, r.name),
		Gossip: g,
		Fetcher: &cutFetcher{self: r.name, c: c, http: &crdt.HTTPFetcher{
			BaseURL: func(m string) (string, error) { return c.urls[m], nil },
		}},
		LiveMachines: func() []string {
			var out []string
			for _, m := range r.node.Members() {
				if m.State == gossip.Alive && !c.blocked(r.name, m.Name) {
					out = append(out, m.Name)
				}
			}
			return out
		},
		Log:      c.log.With("replica", r.name),
		Signer:   r.signer,
		Verifier: r.verifier,
	})
	if err != nil {
		return fmt.Errorf("open store %s: %w", r.name, err)
	}
	r.store.Store(s)
	return nil
}

func (c *cluster) close() {
	for _, r := range c.reps {
		if s := r.store.Swap(nil); s != nil {
			s.Close()
		}
	}
	for _, r := range c.reps {
		if r.node != nil {
			r.node.Close()
		}
		r.srv.Close()
	}
	os.RemoveAll(c.dir)
}

// digestsEqual reports whether every open store has the same digest.
func (c *cluster) digestsEqual(ctx context.Context) bool {
	var first string
	for _, r := range c.reps {
		s := r.store.Load()
		if s == nil {
			continue
		}
		d, err := s.Digest(ctx)
		if err != nil {
			return false
		}
		if first == "" {
			first = d
		} else if d != first {
			return false
		}
	}
	return true
}

func (c *cluster) waitEqual(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	for !c.digestsEqual(ctx) {
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("no convergence within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start), nil
}

// cutGossip drops messages and anti-entropy across the partition: the
// memberlist cluster stays whole, the state layer sees a partition.
type cutGossip struct {
	*gossip.Node
	c *cluster
}

func (g *cutGossip) Subscribe(topic string, h func(string, []byte)) {
	if h == nil {
		g.Node.Subscribe(topic, nil)
		return
	}
	g.Node.Subscribe(topic, func(from string, p []byte) {
		if !g.c.blocked(g.LocalName(), from) {
			h(from, p)
		}
	})
}

func (g *cutGossip) SetLocalState(topic string, local func() []byte, merge func(string, []byte)) {
	if local == nil && merge == nil {
		g.Node.SetLocalState(topic, nil, nil)
		return
	}
	g.Node.SetLocalState(topic, local, func(from string, p []byte) {
		if !g.c.blocked(g.LocalName(), from) {
			merge(from, p)
		}
	})
}

type cutFetcher struct {
	self string
	c    *cluster
	http *crdt.HTTPFetcher
}

func (f *cutFetcher) FetchBlocks(ctx context.Context, m string, req crdt.FetchRequest) (<-chan blocks.Block, error) {
	if f.c.blocked(f.self, m) {
		return nil, fmt.Errorf("%s unreachable across the partition", m)
	}
	return f.http.FetchBlocks(ctx, m, req)
}
