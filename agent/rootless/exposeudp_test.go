package rootless

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

// udpEchoServer listens on 127.0.0.1 and sends each datagram back.
func udpEchoServer(t *testing.T) uint16 {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
}

// udpRoundTrip sends msg on c and reads one answer within wait.
func udpRoundTrip(c *net.UDPConn, msg []byte, wait time.Duration) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, maxDatagram)
	n, err := c.Read(buf)
	return buf[:n], err
}

// TestHostDialUDP: the helper answers a udp request only for a port
// exposed as UDP, with a socket connect()ed to the host's 127.0.0.1:port.
func TestHostDialUDP(t *testing.T) {
	udpPort, tcpPort := udpEchoServer(t), echoServer(t)
	agentConn, _ := helperPairExposed(t, tun.ExposedPort{Port: udpPort, Proto: "udp"}, tun.ExposedPort{Port: tcpPort, Proto: "tcp"})
	d := NewHostDialer(agentConn)
	defer d.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		proto string
		port  uint16
	}{{"udp", tcpPort}, {"tcp", udpPort}, {"udp", udpPort + 1}} {
		if c, err := d.Dial(ctx, tc.proto, tc.port); err == nil || !strings.Contains(err.Error(), "is not exposed") {
			if c != nil {
				c.Close()
			}
			t.Errorf("Dial %s %d: %v, want not exposed", tc.proto, tc.port, err)
		}
	}
	c, err := d.Dial(ctx, "udp", udpPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uc, ok := c.(*net.UDPConn)
	if !ok {
		t.Fatalf("udp dial gave a %T", c)
	}
	if want := "127.0.0.1:" + strconv.Itoa(int(udpPort)); uc.RemoteAddr().String() != want {
		t.Fatalf("udp socket connected to %v, want %s", uc.RemoteAddr(), want)
	}
	if got, err := udpRoundTrip(uc, []byte("ping"), 5*time.Second); err != nil || string(got) != "ping" {
		t.Fatalf("through the helper's UDP socket: %q, %v", got, err)
	}
}

// TestExposerUDP: datagrams to an exposed UDP port on the "mesh address"
// (127.0.0.2) reach an echo server on 127.0.0.1 through a real helper and
// the answers come back from the mesh address:port, per source; flows
// are bounded, idle ones close, a port the helper refuses drops the
// datagram, and removing the port closes its flows.
func TestExposerUDP(t *testing.T) {
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	probe.Close()
	port, refused := udpEchoServer(t), udpEchoServer(t)
	agentConn, _ := helperPairExposed(t, tun.ExposedPort{Port: port, Proto: "udp"}) // not refused
	d := NewHostDialer(agentConn)
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const idle = 500 * time.Millisecond
	e := &Exposer{Addr: netip.MustParseAddr("127.0.0.2"), Dial: d.Dial, udpIdle: idle, udpMaxFlows: 2}
	e.Start(ctx)
	if err := e.SetExposed([]tun.ExposedPort{{Port: port, Proto: "udp"}, {Port: refused, Proto: "udp"}}); err != nil {
		t.Fatal(err)
	}
	e.mu.Lock()
	up, upRefused := e.udp[port], e.udp[refused]
	e.mu.Unlock()
	client := func(p uint16) *net.UDPConn {
		// Connected: it takes answers only from the mesh address:port.
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), p)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	a, b, c := client(port), client(port), client(port)
	big := []byte(strings.Repeat("x", 65000)) // near UDP's limit, under maxDatagram
	for i, cl := range []*net.UDPConn{a, b} {
		for _, msg := range [][]byte{[]byte("flow" + strconv.Itoa(i)), big} {
			if got, err := udpRoundTrip(cl, msg, 5*time.Second); err != nil || string(got) != string(msg) {
				t.Fatalf("client %d, %d bytes: %d bytes back, %v", i, len(msg), len(got), err)
			}
		}
	}
	if n := up.flowCount(); n != 2 {
		t.Fatalf("%d flows after two sources, want 2", n)
	}
	// A third source while two flows live: over the bound, dropped.
	if got, err := udpRoundTrip(c, []byte("third"), idle/2); err == nil {
		t.Fatalf("a source over the flow bound was answered %q", got)
	}
	// Both flows idle out; then the third source gets its flow.
	deadline := time.Now().Add(5 * time.Second)
	for up.flowCount() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d flows still open after %v idle", up.flowCount(), idle)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, err := udpRoundTrip(c, []byte("third"), 5*time.Second); err != nil || string(got) != "third" {
		t.Fatalf("a source after the flows idled out: %q, %v", got, err)
	}

	// Listened on here, but the helper refuses: dropped, no flow kept.
	r := client(refused)
	if got, err := udpRoundTrip(r, []byte("x"), time.Second); err == nil {
		t.Fatalf("a port the helper does not allow answered %q", got)
	}
	if n := upRefused.flowCount(); n != 0 {
		t.Fatalf("%d flows kept on a refused port", n)
	}

	// expose rm: the port's flows close with it.
	if got, err := udpRoundTrip(c, []byte("again"), 5*time.Second); err != nil || string(got) != "again" {
		t.Fatalf("a source again: %q, %v", got, err)
	}
	if up.flowCount() != 1 {
		t.Fatalf("%d flows before rm, want 1", up.flowCount())
	}
	if err := e.SetExposed(nil); err != nil {
		t.Fatal(err)
	}
	if up.flowCount() != 0 || up.flows != nil {
		t.Fatalf("flows after rm: %d", up.flowCount())
	}
	if got, err := udpRoundTrip(c, []byte("gone"), idle); err == nil {
		t.Fatalf("a removed port answered %q", got)
	}
	if len(e.Ports()) != 0 {
		t.Fatalf("ports left: %v", e.Ports())
	}
}
