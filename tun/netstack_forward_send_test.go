package tun

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestNetstackForwardHostSends checks the direction where the netstack
// sends (a forwarded host service answering a mesh client): the service
// sends more than every buffer on the way holds, in writes of odd sizes,
// then half-closes. The mesh client must get every byte in
// order, then the end of the stream, and the other direction must stay
// open after it (a half-close, as a kernel NAT passes it on).
func TestNetstackForwardHostSends(t *testing.T) {
	size := 24 << 20 // more than every buffer on the way
	if testing.Short() {
		size = 4 << 20 // the qemu runs: still more than the buffers, at emulated speed
	}
	payload := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	reply := make(chan []byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			reply <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(nsTestTimeout))
		// Odd write sizes, so the forwarder's reads end at arbitrary
		// points of gVisor's buffer chunks.
		for off, i := 0, 0; off < len(payload); i++ {
			n := min(len(payload)-off, 1+(i*7919)%300_000)
			if _, err := c.Write(payload[off : off+n]); err != nil {
				reply <- nil
				return
			}
			off += n
		}
		c.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(c)
		reply <- got
	}()

	a, _ := newNSPair(t, implOurs, implOurs, []ExposedPort{{Port: port, Proto: "tcp"}})
	c, err := a.dial(nsContext(t), "tcp", netip.AddrPortFrom(nsAddrB, port).String())
	if err != nil {
		t.Fatalf("dial exposed port: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(nsTestTimeout))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from host service: %v after %d bytes", err, len(got))
	}
	if len(got) != len(payload) {
		t.Fatalf("got %d bytes before the end of the stream, want %d", len(got), len(payload))
	}
	if i := firstDiff(got, payload); i >= 0 {
		t.Fatalf("byte %d differs", i)
	}
	// The host half-closed; the mesh side can still send to it.
	if _, err := c.Write([]byte("thanks")); err != nil {
		t.Fatalf("write after the host's half-close: %v", err)
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	select {
	case r := <-reply:
		if !bytes.Equal(r, []byte("thanks")) {
			t.Fatalf("host got %q after its half-close, want %q", r, "thanks")
		}
	case <-time.After(nsTestTimeout):
		t.Fatal("host service did not finish")
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
