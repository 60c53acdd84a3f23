package gossip

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/uncloud-mesh/uncloud/internal/testkit"
)

// testKey is the network key of every test cluster.
var testKey = []byte("0123456789abcdef0123456789abcdef")

// testLogger logs memberlist at warn and up when -v, nothing otherwise.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() || os.Getenv("GOSSIP_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("test", t.Name())
}

// testConfig returns a config for machine i on its own loopback address
// 127.0.0.(10+i), a free port, fast timings.
func testConfig(t testing.TB, i int) Config {
	return Config{
		Name:           fmt.Sprintf("m%02d", i),
		BindAddr:       netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i)}), 0),
		Keys:           [][]byte{testKey},
		RejoinInterval: 300 * time.Millisecond,
		Logger:         testLogger(t),
		timing:         testTiming(),
	}
}

// startNode starts a node and closes it at cleanup.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// startCluster starts count nodes; each one after the first joins the
// first. mutate may adjust each config.
func startCluster(t testing.TB, count int, mutate func(i int, c *Config)) []*Node {
	t.Helper()
	nodes := make([]*Node, count)
	for i := range count {
		c := testConfig(t, i)
		if i > 0 {
			c.Seeds = []string{nodes[0].Addr().String()}
		}
		if mutate != nil {
			mutate(i, &c)
		}
		nodes[i] = startNode(t, c)
	}
	return nodes
}

// waitFor polls cond until it holds or timeout passes (wall clock:
// memberlist runs on real loopback sockets, so these tests cannot use a
// synctest bubble).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.EventuallyTrue(t, what, timeout, cond)
}

// converged reports whether every node sees exactly want live members.
func converged(nodes []*Node, want int) bool {
	for _, n := range nodes {
		if len(n.Members()) != want {
			return false
		}
	}
	return true
}

func names(ms []Member) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Name)
	}
	return strings.Join(s, ",")
}

// filterTransport is a fake for faults loopback alone cannot produce: it
// drops packets and refuses streams to blocked destinations (a partition,
// when both sides block each other), and can record the packets it writes
// (for wire-level replay).
type filterTransport struct {
	memberlist.NodeAwareTransport
	mu      sync.Mutex
	blocked map[string]bool // "ip:port"
	record  bool
	sent    [][]byte
}

func newFilter() (*filterTransport, func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport) {
	f := &filterTransport{blocked: make(map[string]bool)}
	return f, func(inner memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		f.NodeAwareTransport = inner
		return f
	}
}

// startFilteredCluster starts count nodes as startCluster does, each on
// memNet (onMemNet) behind a filterTransport of its own, then mutate (nil
// for none); it returns the nodes and their filters, by index.
func startFilteredCluster(t testing.TB, count int, onMemNet, mutate func(i int, c *Config)) ([]*Node, []*filterTransport) {
	t.Helper()
	filters := make([]*filterTransport, count)
	nodes := startCluster(t, count, func(i int, c *Config) {
		onMemNet(i, c)
		f, w := newFilter()
		filters[i] = f
		c.wrapTransport = w
		if mutate != nil {
			mutate(i, c)
		}
	})
	return nodes, filters
}

func (f *filterTransport) block(addrs ...netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range addrs {
		f.blocked[a.String()] = true
	}
}

func (f *filterTransport) unblockAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.blocked)
}

func (f *filterTransport) isBlocked(addr string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blocked[addr]
}

func (f *filterTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return f.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (f *filterTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if f.isBlocked(a.Addr) {
		return time.Now(), nil // silently lost, like a packet into a partition
	}
	f.mu.Lock()
	if f.record {
		f.sent = append(f.sent, clone(b))
	}
	f.mu.Unlock()
	return f.NodeAwareTransport.WriteToAddress(b, a)
}

func (f *filterTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return f.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (f *filterTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if f.isBlocked(a.Addr) {
		return nil, fmt.Errorf("test partition: %s unreachable", a.Addr)
	}
	return f.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

// ourGoroutines returns the stacks of goroutines running memberlist or
// this package's code (the test framework's own are not counted).
func ourGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "gossip.TestMain") || strings.Contains(g, "testing.tRunner") {
			continue
		}
		if strings.Contains(g, "hashicorp/memberlist") || strings.Contains(g, "uncloud/gossip.") {
			out = append(out, g)
		}
	}
	return out
}

// TestMain fails the package if goroutines of memberlist or this package
// outlive every node's Close.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var left []string
		_, err := testkit.Poll(ctx, "goroutines gone after Close", func() error {
			if left = ourGoroutines(); len(left) > 0 {
				return fmt.Errorf("%d left", len(left))
			}
			return nil
		})
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%d goroutines outlived Close:\n%s\n", len(left), strings.Join(left, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}
