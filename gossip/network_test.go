package gossip

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// countingNetwork is an injected Network on real loopback sockets that
// counts its use, so the test can tell that gossip really went through it
// (in production the Network is the mesh device's netstack).
type countingNetwork struct {
	listens, dials atomic.Int64
}

func (c *countingNetwork) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	c.listens.Add(1)
	var lc net.ListenConfig
	return lc.Listen(ctx, network, address)
}

func (c *countingNetwork) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	c.listens.Add(1)
	var lc net.ListenConfig
	return lc.ListenPacket(ctx, network, address)
}

func (c *countingNetwork) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c.dials.Add(1)
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

// TestInjectedNetwork mixes nodes on an injected Network with nodes on
// memberlist's own transport: they form one cluster and broadcasts (small
// and stream-sized) reach everyone.
func TestInjectedNetwork(t *testing.T) {
	nets := []*countingNetwork{nil, {}, {}}
	nodes := startCluster(t, 3, func(i int, c *Config) {
		if nets[i] != nil {
			c.Network = nets[i]
			c.BindAddr = netip.AddrPortFrom(c.BindAddr.Addr(), uint16(47100+i))
		}
	})
	waitFor(t, 5*time.Second, "cluster of 3", func() bool { return converged(nodes, 3) })
	ins := make([]*inbox, 3)
	for i, n := range nodes {
		ins[i] = subscribe(n, "t")
	}
	if err := nodes[1].Broadcast("t", "small", stamped(1, 64)); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].Broadcast("t", "big", stamped(2, 32<<10)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "broadcasts everywhere", func() bool {
		return ins[0].count(nodes[1].LocalName()) == 1 && ins[2].count(nodes[1].LocalName()) == 1 &&
			ins[1].count(nodes[0].LocalName()) == 1 && ins[2].count(nodes[0].LocalName()) == 1
	})
	for i, c := range nets[1:] {
		if c.listens.Load() != 2 || c.dials.Load() == 0 {
			t.Errorf("node %d: %d listens and %d dials on the injected network, want 2 and some", i+1, c.listens.Load(), c.dials.Load())
		}
	}
}

// TestInjectedNetworkPortZero: with port 0 the stream listener picks the
// port and the packet socket takes the same one, on an injected network as
// on host sockets.
func TestInjectedNetworkPortZero(t *testing.T) {
	cfg := testConfig(t, 5)
	cfg.Network = &countingNetwork{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New with port 0 on an injected network: %v", err)
	}
	defer n.Close()
	if n.Addr().Port() == 0 {
		t.Fatalf("bound %v: no port picked", n.Addr())
	}
	pc, err := net.ListenPacket("udp", n.Addr().String())
	if err == nil {
		pc.Close()
		t.Fatalf("UDP %v is free: the packet socket is not on the stream listener's port", n.Addr())
	}
}
