package rootless

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

// TestExposer: connections to an exposed port on the "mesh address"
// (127.0.0.2 here: another address of loopback) reach the service on
// 127.0.0.1 through a real helper; a port the helper's settings do not
// expose is reset; adding a UDP port leaves TCP's alone; removing a port closes its
// live connections.
func TestExposer(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	probe.Close()
	port, other := echoServer(t), echoServer(t)
	agentConn, _ := helperPair(t, port) // the helper allows port only
	d := NewHostDialer(agentConn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := &Exposer{Addr: netip.MustParseAddr("127.0.0.2"), Dial: d.Dial}
	e.Start(ctx)
	if err := e.SetExposed([]tun.ExposedPort{{Port: port, Proto: "tcp"}, {Port: other, Proto: "tcp"}}); err != nil {
		t.Fatal(err)
	}
	mesh := func(p uint16) string { return net.JoinHostPort("127.0.0.2", strconv.Itoa(int(p))) }

	c, err := net.Dial("tcp", mesh(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "through"); err != nil || got != "through" {
		t.Fatalf("exposed port: %q, %v", got, err)
	}

	// Listened on here, but the helper refuses: the connection is reset.
	refused, err := net.Dial("tcp", mesh(other))
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	if got, err := roundTrip(refused, "x"); err == nil {
		t.Fatalf("a port the helper does not allow answered %q", got)
	}

	if err := e.SetExposed([]tun.ExposedPort{{Port: port, Proto: "tcp"}, {Port: 5353, Proto: "udp"}}); err != nil {
		t.Fatalf("a UDP port beside the TCP one: %v", err)
	}
	if got, err := roundTrip(c, "still"); err != nil || got != "still" {
		t.Fatalf("the TCP port after a UDP one was added: %q, %v", got, err)
	}

	if err := e.SetExposed(nil); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a connection of a port no longer exposed read %d bytes", n)
	}
	if c2, err := net.Dial("tcp", mesh(port)); err == nil {
		c2.Close()
		t.Fatal("a port no longer exposed still accepts")
	}
	if len(e.Ports()) != 0 {
		t.Fatalf("ports left: %v", e.Ports())
	}
}
