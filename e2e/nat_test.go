package e2e

import (
	"net/netip"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// TestMeshThroughNAT puts one machine behind a NAT router (endpoint-
// independent, then symmetric) and the other on the internet. The NATed
// machine knows the public one's endpoint and calls it (its keepalive
// opens the mapping); the public one learns the NATed endpoint from the
// authenticated handshake, as WireGuard roaming does. Traffic must flow
// both ways. (Two machines both behind NAT need the NAT traversal of a
// later issue.)
func TestMeshThroughNAT(t *testing.T) {
	for _, tc := range []struct {
		kind lab.NATKind
		mode mode
	}{
		{lab.NATEndpointIndependent, kernel},
		{lab.NATSymmetric, netstack},
	} {
		t.Run(tc.kind.String()+"-"+string(tc.mode), func(t *testing.T) {
			l := lab.Start(t)
			ctx := t.Context()
			public := l.MustHost(t, "pub", lab.HostOptions{})
			natted := l.MustHost(t, "nat", lab.HostOptions{NAT: tc.kind})
			specs := []lab.Node{{Host: public}, {Host: natted}}
			if tc.mode == netstack {
				specs[1].Options = lab.AgentOptions{Userspace: true,
					Expose: []string{itoa(echoPort), itoa(transferPort)},
					SOCKS5: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), socksPort)}
			}
			cfgs, err := lab.MeshConfigs(specs)
			if err != nil {
				t.Fatal(err)
			}
			// The public machine cannot know where the NAT will map the
			// other one: no endpoint, it learns it from the handshake.
			cfgs[0].Peers[0].Endpoint = netip.AddrPort{}
			cfgs[0].Peers[0].PersistentKeepalive = 0
			nodes := make([]node, 2)
			for i, s := range specs {
				a, err := s.Host.StartAgent(ctx, cfgs[i], s.Options)
				if err != nil {
					t.Fatal(err)
				}
				m := kernel
				if s.Options.Userspace {
					m = netstack
				}
				nodes[i] = node{host: s.Host, agent: a, mode: m}
				if _, err := s.Host.StartEcho(ctx, "echo", nodes[i].serviceAddr(echoPort)); err != nil {
					t.Fatal(err)
				}
			}
			for _, pair := range [][2]node{{nodes[1], nodes[0]}, {nodes[0], nodes[1]}} {
				msg, ok := reach(ctx, pair[0], pair[1], 30*time.Second)
				if !ok {
					t.Fatalf("%s → %s: %s", pair[0].host.Name, pair[1].host.Name, msg)
				}
				t.Logf("%s → %s: %s", pair[0].host.Name, pair[1].host.Name, msg)
			}
			transfer(t, nodes[0], nodes[1], 10<<20, 21)
			transfer(t, nodes[1], nodes[0], 10<<20, 22)
		})
	}
}

// TestMeshOverLossyLink adds delay and loss to both machines' links (where
// the kernel has netem) and checks that a transfer still arrives intact.
func TestMeshOverLossyLink(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	if !l.NetemSupported(ctx) {
		t.Skip("skipping: this kernel has no sch_netem (tc netem)")
	}
	nodes := startMesh(t, l, kernel, netstack)
	for _, n := range nodes {
		if err := n.host.SetNetem(ctx, lab.Netem{Delay: 10 * time.Millisecond, Loss: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, pair := range [][2]node{{nodes[0], nodes[1]}, {nodes[1], nodes[0]}} {
		if msg, ok := reach(ctx, pair[0], pair[1], 30*time.Second); !ok {
			t.Fatalf("%s → %s over a lossy link: %s", pair[0].host.Name, pair[1].host.Name, msg)
		}
	}
	transfer(t, nodes[0], nodes[1], 10<<20, 31)
	transfer(t, nodes[1], nodes[0], 10<<20, 32)
}
