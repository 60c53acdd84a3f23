package tun

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// nsTestTimeout bounds every network operation of a test, so a broken path
// fails the test instead of hanging it.
const nsTestTimeout = 20 * time.Second

func nsContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), nsTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// TestNetstackICMPEcho writes an echo request into the device as a
// kernel-TUN peer's WireGuard would, and checks the reply the stack queues.
func TestNetstackICMPEcho(t *testing.T) {
	tests := []struct {
		name  string
		dst   netip.Addr
		reply bool
	}{
		{"to own address", nsAddrB, true},
		{"to another address", netip.MustParseAddr("10.210.2.7"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, err := newNetstack(netstackConfig{Address: nsAddrB, MTU: meshaddr.MaxTunnelMTU})
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Close()

			payload := []byte("uncloud ping")
			req := nsEchoRequest(nsAddrA, tt.dst, 0x1234, 7, payload)
			if _, err := ns.Write([][]byte{req}, 0); err != nil {
				t.Fatalf("Write: %v", err)
			}

			got := make(chan []byte, 1)
			go func() {
				bufs := [][]byte{make([]byte, 2048)}
				sizes := []int{0}
				n, err := ns.Read(bufs, sizes, 0)
				if err != nil || n == 0 {
					return
				}
				got <- bufs[0][:sizes[0]]
			}()
			select {
			case pkt := <-got:
				if !tt.reply {
					t.Fatalf("unexpected packet %x", pkt)
				}
				nsCheckEchoReply(t, pkt, nsAddrB, nsAddrA, 0x1234, 7, payload)
			case <-time.After(500 * time.Millisecond):
				if tt.reply {
					t.Fatal("no echo reply within 500ms")
				}
			}
		})
	}
}

// nsEchoRequest builds an IPv4 ICMP echo request with valid checksums.
func nsEchoRequest(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	total := header.IPv4MinimumSize + header.ICMPv4MinimumSize + len(payload)
	pkt := make([]byte, total)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(total),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     nsTCPIPAddr(src),
		DstAddr:     nsTCPIPAddr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(pkt[header.IPv4MinimumSize:])
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(id)
	icmp.SetSequence(seq)
	copy(icmp.Payload(), payload)
	icmp.SetChecksum(^nsChecksum(icmp))
	return pkt
}

func nsCheckEchoReply(t *testing.T, pkt []byte, src, dst netip.Addr, id, seq uint16, payload []byte) {
	t.Helper()
	ip := header.IPv4(pkt)
	if !ip.IsValid(len(pkt)) || !ip.IsChecksumValid() {
		t.Fatalf("reply is not a valid IPv4 packet: %x", pkt)
	}
	if ip.SourceAddress() != nsTCPIPAddr(src) || ip.DestinationAddress() != nsTCPIPAddr(dst) {
		t.Fatalf("reply %v -> %v, want %v -> %v", ip.SourceAddress(), ip.DestinationAddress(), src, dst)
	}
	icmp := header.ICMPv4(ip.Payload())
	if icmp.Type() != header.ICMPv4EchoReply || icmp.Ident() != id || icmp.Sequence() != seq {
		t.Fatalf("reply type %v id %#x seq %d, want echo reply id %#x seq %d", icmp.Type(), icmp.Ident(), icmp.Sequence(), id, seq)
	}
	if nsChecksum(icmp) != 0xffff {
		t.Fatalf("reply ICMP checksum is wrong")
	}
	if !bytes.Equal(icmp.Payload(), payload) {
		t.Fatalf("reply payload %q, want %q", icmp.Payload(), payload)
	}
}

// nsChecksum is the Internet checksum (RFC 1071), not complemented.
func nsChecksum(b []byte) uint16 {
	var sum uint32
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// TestNetstackTCPTransfer moves 100 MB each way between two netstacks over
// wireguard-go and compares SHA-256 sums. Under qemu-user it moves 8 MB:
// translated ChaCha20 and checksums run at a few MB/s, and what the test
// checks (every byte arrives intact, both ways) does not need 100.
func TestNetstackTCPTransfer(t *testing.T) {
	size := int64(100 << 20)
	if testkit.Emulator() != "" {
		size = 8 << 20
	}
	a, b := newNSPair(t, implOurs, implOurs, nil)
	tests := []struct {
		name     string
		from, to *nsNode
		port     uint16
	}{
		{"a to b", a, b, 5001},
		{"b to a", b, a, 5002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := nsContext(t)
			l, err := tt.to.listen(tt.port)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			type result struct {
				sum [32]byte
				n   int64
				err error
			}
			received := make(chan result, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					received <- result{err: err}
					return
				}
				defer c.Close()
				h := sha256.New()
				n, err := io.Copy(h, c)
				var r result
				copy(r.sum[:], h.Sum(nil))
				r.n, r.err = n, err
				received <- r
			}()

			c, err := tt.from.dial(ctx, "tcp", netip.AddrPortFrom(tt.to.addr, tt.port).String())
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			c.SetDeadline(time.Now().Add(testkit.Timeout(nsTestTimeout)))
			h := sha256.New()
			src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{1}), size), h)
			start := time.Now()
			if _, err := io.CopyBuffer(c, src, make([]byte, 256<<10)); err != nil {
				t.Fatalf("send: %v", err)
			}
			c.Close()
			var r result
			select {
			case r = <-received:
			case <-ctx.Done():
				t.Fatal("receiver did not finish")
			}
			if r.err != nil || r.n != size {
				t.Fatalf("received %d bytes, err %v; want %d", r.n, r.err, size)
			}
			if want := [32]byte(h.Sum(nil)); r.sum != want {
				t.Fatalf("sha256 mismatch: got %x want %x", r.sum, want)
			}
			t.Logf("%d MB in %v (%.2f Gbit/s)", size>>20, time.Since(start).Round(time.Millisecond),
				float64(size)*8/time.Since(start).Seconds()/1e9)
		})
	}
}

// nsHostTCPEcho starts an echo server on 127.0.0.1 and returns its port.
func nsHostTCPEcho(t *testing.T) uint16 {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go nsEchoServe(l)
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// nsFreePort returns a loopback TCP port with nothing listening on it.
func nsFreePort(t *testing.T) uint16 {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	return port
}

// nsEchoOnce writes msg on c and expects it back.
func nsEchoOnce(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// TestNetstackForwardTCP checks the allow-list: an exposed port reaches the
// host listener, everything else is refused quickly, and a port the agent
// listens on inside the netstack is served there even if it is exposed.
func TestNetstackForwardTCP(t *testing.T) {
	exposedOpen := nsHostTCPEcho(t)
	notExposedButOpen := nsHostTCPEcho(t) // a localhost-only service
	exposedClosed := nsFreePort(t)
	exposedAndInternal := nsHostTCPEcho(t)
	a, b := newNSPair(t, implOurs, implOurs, []ExposedPort{
		{Port: exposedOpen, Proto: "tcp"},
		{Port: exposedClosed, Proto: "tcp"},
		{Port: exposedAndInternal, Proto: "tcp"},
	})
	internal, err := b.ns.Listen("tcp", nsAddrB.String()+":"+strconv.Itoa(int(exposedAndInternal)))
	if err != nil {
		t.Fatal(err)
	}
	defer internal.Close()
	go func() {
		for {
			c, err := internal.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("internal"))
			c.Close()
		}
	}()

	t.Run("exposed port is forwarded both ways", func(t *testing.T) {
		c, err := a.dial(nsContext(t), "tcp", netip.AddrPortFrom(nsAddrB, exposedOpen).String())
		if err != nil {
			t.Fatalf("dial exposed port: %v", err)
		}
		defer c.Close()
		nsEchoOnce(t, c, []byte("hello host"))
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MB
		nsEchoOnceLarge(t, c, big)
	})
	refused := []struct {
		name string
		port uint16
	}{
		{"not exposed, host listener exists", notExposedButOpen},
		{"exposed, nothing listening on host", exposedClosed},
		{"not exposed, nothing listening", nsFreePort(t)},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			start := time.Now()
			c, err := a.dial(ctx, "tcp", netip.AddrPortFrom(nsAddrB, tt.port).String())
			if err == nil {
				c.Close()
				t.Fatalf("dial to port %d succeeded, want refused", tt.port)
			}
			if ctx.Err() != nil || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("dial to port %d: %v after %v, want a quick refusal", tt.port, err, time.Since(start))
			}
		})
	}
	t.Run("internal listener wins over forwarding", func(t *testing.T) {
		c, err := a.dial(nsContext(t), "tcp", netip.AddrPortFrom(nsAddrB, exposedAndInternal).String())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "internal" {
			t.Fatalf("read %q, %v; want %q from the netstack listener", got, err, "internal")
		}
	})
}

// nsEchoOnceLarge writes msg concurrently with reading it back, since an
// echo of more than the socket buffers would deadlock a write-then-read.
func nsEchoOnceLarge(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("large echo differs")
	}
}

// nsHostUDPEcho starts a UDP echo server on 127.0.0.1 and returns its port.
func nsHostUDPEcho(t *testing.T) uint16 {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
}

func TestNetstackForwardUDP(t *testing.T) {
	exposed := nsHostUDPEcho(t)
	notExposed := nsHostUDPEcho(t)
	a, _ := newNSPair(t, implOurs, implOurs, []ExposedPort{{Port: exposed, Proto: "udp"}})
	tests := []struct {
		name  string
		port  uint16
		reply bool
	}{
		{"exposed", exposed, true},
		{"not exposed", notExposed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.dial(nsContext(t), "udp", netip.AddrPortFrom(nsAddrB, tt.port).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 2048)
			for i := range 3 {
				msg := []byte("datagram " + strconv.Itoa(i))
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				wait := 5 * time.Second
				if !tt.reply {
					wait = 500 * time.Millisecond
				}
				c.SetReadDeadline(time.Now().Add(wait))
				n, err := c.Read(buf)
				if !tt.reply {
					if err == nil {
						t.Fatalf("got %q from a port that is not exposed", buf[:n])
					}
					return
				}
				if err != nil {
					t.Fatalf("read reply %d: %v", i, err)
				}
				if string(buf[:n]) != string(msg) {
					t.Fatalf("reply %q, want %q", buf[:n], msg)
				}
			}
		})
	}
}

// TestNetstackListenDial covers the agent's own sockets inside the netstack.
func TestNetstackListenDial(t *testing.T) {
	a, b := newNSPair(t, implOurs, implOurs, nil)
	t.Run("tcp", func(t *testing.T) {
		l, err := b.ns.Listen("tcp", ":7946")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go nsEchoServe(l)
		c, err := a.ns.DialContext(nsContext(t), "tcp4", "10.210.2.1:7946")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		nsEchoOnce(t, c, []byte("gossip"))
		if got := c.LocalAddr().String(); !strings.HasPrefix(got, "10.210.1.1:") {
			t.Fatalf("local address %s, want the mesh address 10.210.1.1", got)
		}
	})
	t.Run("udp", func(t *testing.T) {
		pc, err := b.ns.ListenPacket("udp", "10.210.2.1:7946")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(buf[:n], from)
			}
		}()
		c, err := a.ns.DialContext(nsContext(t), "udp", "10.210.2.1:7946")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		nsEchoOnce(t, c, []byte("probe"))
	})
	bad := []struct {
		name, network, address string
		listen                 bool
	}{
		{"dial name", "tcp", "example.com:80", false},
		{"dial without host", "tcp", ":80", false},
		{"dial ipv6", "tcp", "[fd00::1]:80", false},
		{"dial unix", "unix", "10.210.2.1:80", false},
		{"listen foreign address", "tcp", "10.210.9.1:80", true},
		{"listen bad port", "tcp", ":http", true},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.listen {
				var l net.Listener
				l, err = a.ns.Listen(tt.network, tt.address)
				if err == nil {
					l.Close()
				}
			} else {
				var c net.Conn
				c, err = a.ns.DialContext(nsContext(t), tt.network, tt.address)
				if err == nil {
					c.Close()
				}
			}
			if err == nil {
				t.Fatalf("%s %s succeeded, want an error", tt.network, tt.address)
			}
			if !strings.Contains(err.Error(), tt.address) {
				t.Fatalf("error %q does not name the address %q", err, tt.address)
			}
		})
	}
}

// TestNetstackClose checks that closing both devices stops every goroutine
// of the netstack, the forwarders and wireguard-go, including a forwarded
// connection and a netstack connection still open, and that Read returns.
func TestNetstackClose(t *testing.T) {
	hostPort := nsHostTCPEcho(t)
	udpPort := nsHostUDPEcho(t)
	a, b := newNSPair(t, implOurs, implOurs, []ExposedPort{{Port: hostPort, Proto: "tcp"}, {Port: udpPort, Proto: "udp"}})
	ctx := nsContext(t)
	fwd, err := a.dial(ctx, "tcp", netip.AddrPortFrom(nsAddrB, hostPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	nsEchoOnce(t, fwd, []byte("x"))
	udp, err := a.dial(ctx, "udp", netip.AddrPortFrom(nsAddrB, udpPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	nsEchoOnce(t, udp, []byte("y"))

	a.dev.Close()
	b.dev.Close()
	if _, err := b.ns.Read([][]byte{make([]byte, 2048)}, []int{0}, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: %v, want os.ErrClosed", err)
	}
	if err := b.ns.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		stuck := nsStuckGoroutines()
		if stuck == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left after Close:\n%s", stuck)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nsStuckGoroutines returns the stacks of goroutines that belong to the
// netstack, its forwarders or wireguard-go.
func nsStuckGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "gvisor.dev/gvisor") ||
			strings.Contains(g, "golang.zx2c4.com/wireguard/device") ||
			strings.Contains(g, "tun.(*forwarder)") ||
			strings.Contains(g, "tun.(*linkEndpoint)") ||
			strings.Contains(g, "tun.splice") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func nsTCPIPAddr(a netip.Addr) tcpip.Address { return tcpip.AddrFrom4(a.As4()) }
