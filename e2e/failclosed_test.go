package e2e

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// TestFailClosedAfterKill9 kills a kernel-mode agent with SIGKILL (no
// chance to clean up) and checks that its host has no clear-text path into
// the mesh: the route lookup says unreachable, sends fail, and nothing to
// 10.210.0.0/16 appears on the underlay. A control step then removes the
// unreachable route and shows that the same send WOULD leak and be counted,
// so the test cannot pass by measuring nothing.
func TestFailClosedAfterKill9(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	nodes := startMesh(t, l, kernel, kernel)
	a, b := nodes[0], nodes[1]
	if msg, ok := reach(ctx, a, b, 20*time.Second); !ok {
		t.Fatalf("before the kill: %s", msg)
	}

	const meshMatch = "ip daddr 10.210.0.0/16"
	onWire, err := l.CountOnInternet(ctx, meshMatch)
	if err != nil {
		t.Fatal(err)
	}
	egress, err := a.host.CountEgress(ctx, meshMatch)
	if err != nil {
		t.Fatal(err)
	}

	if err := a.agent.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if status := a.agent.Proc.Cmd.ProcessState.Sys().(syscall.WaitStatus); !status.Signaled() || status.Signal() != syscall.SIGKILL {
		t.Fatalf("agent exit: %v, want killed by SIGKILL", a.agent.Proc.Cmd.ProcessState)
	}
	target := b.agent.MeshAddr()

	// 1. The kernel's route lookup for a mesh address says unreachable.
	out, err := a.host.Run(ctx, "ip", "route", "get", target.String())
	if err == nil && !strings.HasPrefix(strings.TrimSpace(out), "unreachable") {
		t.Errorf("after kill -9, `ip route get %s` = %q, want unreachable", target, out)
	} else if err != nil && !strings.Contains(err.Error(), "No route to host") {
		t.Errorf("after kill -9, `ip route get %s`: %v, want No route to host", target, err)
	}
	routes, err := a.host.Run(ctx, "ip", "route", "show", "10.210.0.0/16")
	if err != nil || !strings.Contains(routes, "unreachable") {
		t.Errorf("after kill -9, routes for 10.210.0.0/16: %q %v, want the unreachable route", routes, err)
	}

	// 2. Sends into the mesh fail at once: UDP, ICMP, TCP.
	sent, err := a.host.SendUDP(ctx, netip.AddrPortFrom(target, 9), 5)
	if err != nil {
		t.Fatal(err)
	}
	if sent.Sent != 0 || sent.Error == "" {
		t.Errorf("after kill -9, UDP to %v: %+v, want every send to fail", target, sent)
	}
	ping, err := a.host.Ping(ctx, target, 1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ping.Received != 0 || ping.Error == "" {
		t.Errorf("after kill -9, ping %v: %+v, want a send error and no reply", target, ping)
	}
	dial, err := a.host.Dial(ctx, netip.AddrPortFrom(target, echoPort), false, lab.DialOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if dial.Connected {
		t.Errorf("after kill -9, TCP to %v connected", target)
	}

	// 3. Nothing went out in clear text.
	for name, c := range map[string]*lab.Counter{"internet bridge": onWire, a.host.Name + " eth0": egress} {
		n, err := c.Packets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("after kill -9: %d packets to 10.210.0.0/16 on the %s, want 0", n, name)
		}
	}
	t.Logf("after kill -9: route %q; UDP: %s; TCP: %s", strings.TrimSpace(routes), sent.Error, dial.Error)

	// Control: without the unreachable route the same send leaks through
	// the default route, and the counters see it.
	if _, err := a.host.Run(ctx, "ip", "route", "flush", "10.210.0.0/16"); err != nil {
		t.Fatal(err)
	}
	leak, err := a.host.SendUDP(ctx, netip.AddrPortFrom(target, 9), 5)
	if err != nil {
		t.Fatal(err)
	}
	n, err := onWire.Packets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if leak.Sent == 0 || n == 0 {
		t.Fatalf("control: without the unreachable route, sent %+v and counted %d packets; the test cannot see leaks", leak, n)
	}
}

// TestCleanShutdownKeepsFailClosedRoute checks that SIGTERM and SIGINT end
// agents (kernel and netstack) with status 0, and that the unreachable route
// stays on the kernel host.
func TestCleanShutdownKeepsFailClosedRoute(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	nodes := startMesh(t, l, kernel, netstack, kernel, netstack)
	for i, n := range nodes {
		sig := []syscall.Signal{syscall.SIGTERM, syscall.SIGINT}[i/2]
		if err := n.agent.StopWith(ctx, sig); err != nil {
			t.Errorf("%s (%s): %v", n.host.Name, n.mode, err)
		}
	}
	out, err := nodes[0].host.Run(ctx, "ip", "route", "show", "10.210.0.0/16")
	if err != nil || !strings.Contains(out, "unreachable") {
		t.Errorf("after SIGTERM, routes for 10.210.0.0/16 on the kernel host: %q %v, want the unreachable route", out, err)
	}
	sent, err := nodes[0].host.SendUDP(ctx, netip.AddrPortFrom(nodes[1].agent.MeshAddr(), 9), 1)
	if err != nil {
		t.Fatal(err)
	}
	if sent.Sent != 0 {
		t.Errorf("after SIGTERM, UDP into the mesh: %+v, want the send to fail", sent)
	}
}
