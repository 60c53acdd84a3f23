package e2e

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
)

// Ports the tests use on every host.
const (
	echoPort     = 7777 // TCP echo: the "ping" of netstack hosts
	transferPort = 5201 // TCP sink for transfers
	socksPort    = 1080 // netstack hosts' SOCKS5 into the mesh
)

// mode is how a host joins the mesh.
type mode string

const (
	kernel   mode = "kernel"
	netstack mode = "netstack"
)

// node is a test's view of one mesh member.
type node struct {
	host  *lab.Host
	agent *lab.Agent
	mode  mode
}

// dial returns how processes on n reach the mesh: directly in kernel mode,
// through the agent's SOCKS5 server in netstack mode.
func (n node) dial(timeout time.Duration) lab.DialOptions {
	o := lab.DialOptions{Timeout: timeout}
	if n.mode == netstack {
		o.SOCKS5 = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), socksPort)
	}
	return o
}

// serviceAddr is where a service on port of n listens: on its mesh address
// in kernel mode (so only mesh traffic reaches it), on loopback in netstack
// mode (where the agent forwards exposed ports to).
func (n node) serviceAddr(port uint16) netip.AddrPort {
	if n.mode == netstack {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	}
	return netip.AddrPortFrom(n.agent.MeshAddr(), port)
}

// meshAddr is where other members reach port on n.
func (n node) meshAddr(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(n.agent.MeshAddr(), port)
}

// startMesh creates one host per mode and a full mesh between them, and
// starts a TCP echo server on each. Netstack hosts expose the echo and
// transfer ports and serve SOCKS5.
func startMesh(t *testing.T, l *lab.Lab, modes ...mode) []node {
	t.Helper()
	ctx := t.Context()
	hosts, err := l.AddHosts(ctx, len(modes))
	if err != nil {
		t.Fatal(err)
	}
	specs := make([]lab.Node, len(modes))
	for i, m := range modes {
		specs[i] = lab.Node{Host: hosts[i]}
		if m == netstack {
			specs[i].Options = lab.AgentOptions{
				Userspace: true,
				Expose:    []string{itoa(echoPort), itoa(transferPort)},
				SOCKS5:    netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), socksPort),
			}
		}
	}
	agents, err := lab.StartMesh(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]node, len(modes))
	for i, a := range agents {
		nodes[i] = node{host: hosts[i], agent: a, mode: modes[i]}
		if a.Mode != string(modes[i]) {
			t.Fatalf("%s: agent says mode=%q, want %q", hosts[i].Name, a.Mode, modes[i])
		}
		if _, err := hosts[i].StartEcho(ctx, "echo", nodes[i].serviceAddr(echoPort)); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// reach checks that from reaches to across the mesh: an ICMP ping when
// from is in kernel mode (its kernel routes into the tunnel), a TCP echo
// through SOCKS5 when from is a netstack host. It retries until within
// passes: the first packets wait for a WireGuard handshake.
func reach(ctx context.Context, from, to node, within time.Duration) (string, bool) {
	pctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last string
	_, err := testkit.Poll(pctx, fmtf("%s reaching %s", from.host.Name, to.host.Name), func() error {
		if from.mode == kernel {
			res, err := from.host.Ping(ctx, to.agent.MeshAddr(), 3, 5*time.Second)
			if err == nil && res.Received == 3 {
				last = fmtf("ping %v: %.2f ms", to.agent.MeshAddr(), res.AvgRTTms)
				return nil
			}
			last = fmtf("ping %v: %+v %v", to.agent.MeshAddr(), res, err)
		} else {
			res, err := from.host.Dial(ctx, to.meshAddr(echoPort), true, from.dial(5*time.Second))
			if err == nil && res.Echoed {
				last = fmtf("TCP echo via SOCKS5 %v: %.2f ms", to.meshAddr(echoPort), res.Seconds*1000)
				return nil
			}
			last = fmtf("TCP echo via SOCKS5 %v: %+v %v", to.meshAddr(echoPort), res, err)
		}
		return errNotReached
	})
	return last, err == nil
}

// errNotReached is reach's "not yet": the attempt's own words are in
// reach's message.
var errNotReached = errors.New("not reached")

// unreachable checks that from does NOT reach to for the whole of window.
func unreachable(ctx context.Context, from, to node, window time.Duration) (string, bool) {
	if from.mode == kernel {
		res, err := from.host.Ping(ctx, to.agent.MeshAddr(), 1, window)
		return fmtf("ping %v: %+v %v", to.agent.MeshAddr(), res, err), err == nil && res.Received == 0
	}
	res, err := from.host.Dial(ctx, to.meshAddr(echoPort), true, from.dial(window))
	return fmtf("TCP echo via SOCKS5 %v: %+v %v", to.meshAddr(echoPort), res, err), err == nil && !res.Echoed
}
