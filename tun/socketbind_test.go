package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// loopbackUDP is a UDP socket on 127.0.0.1, closed when the test ends.
func loopbackUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return uc
}

// handedBind is a SocketBind over what the starter hands over, a bound
// UDP socket's file, and the socket's address.
func handedBind(t *testing.T) (*SocketBind, netip.AddrPort) {
	t.Helper()
	uc := loopbackUDP(t)
	f, err := uc.File()
	uc.Close() // the file is a socket of its own
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	b, err := NewSocketBind(f)
	if err != nil {
		t.Fatal(err)
	}
	return b, uc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func wgPacket(i int) []byte {
	p := make([]byte, 100+i)
	p[0] = 4 // transport data: ClassifyPacket's WireGuard
	binary.BigEndian.PutUint32(p[8:], uint32(i))
	return p
}

func receiveBufs() ([][]byte, []int, []conn.Endpoint) {
	bufs := make([][]byte, socketBatch)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	return bufs, make([]int, socketBatch), make([]conn.Endpoint, socketBatch)
}

func TestSocketBindBatches(t *testing.T) {
	b, addr := handedBind(t)
	fns, port, err := b.Open(51820) // the requested port cannot move the socket
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if len(fns) != 1 || port != addr.Port() {
		t.Fatalf("Open: %d receive funcs, port %d; want 1 and the socket's %d", len(fns), port, addr.Port())
	}
	peer := loopbackUDP(t)
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()

	for _, n := range []int{1, 7, socketBatch, socketBatch + 3} {
		t.Run(fmt.Sprintf("send %d", n), func(t *testing.T) {
			ep, err := b.ParseEndpoint(peerAddr.String())
			if err != nil {
				t.Fatal(err)
			}
			var bufs [][]byte
			for i := 0; i < n; i++ {
				bufs = append(bufs, wgPacket(i))
			}
			if err := b.Send(bufs, ep); err != nil {
				t.Fatal(err)
			}
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, 2048)
			for i := 0; i < n; i++ {
				k, from, err := peer.ReadFromUDPAddrPort(got)
				if err != nil {
					t.Fatalf("datagram %d of %d: %v", i, n, err)
				}
				if !bytes.Equal(got[:k], bufs[i]) || from != addr {
					t.Fatalf("datagram %d: %d bytes from %v, want %d from the handed-in socket %v", i, k, from, len(bufs[i]), addr)
				}
			}
		})
		t.Run(fmt.Sprintf("receive %d", n), func(t *testing.T) {
			for i := 0; i < n; i++ {
				if _, err := peer.WriteToUDPAddrPort(wgPacket(i), addr); err != nil {
					t.Fatal(err)
				}
			}
			bufs, sizes, eps := receiveBufs()
			for seen := 0; seen < n; {
				k, err := fns[0](bufs, sizes, eps)
				if err != nil {
					t.Fatal(err)
				}
				if k < 1 || k > socketBatch {
					t.Fatalf("receive returned %d datagrams", k)
				}
				for j := 0; j < k; j++ {
					want := wgPacket(seen + j)
					if !bytes.Equal(bufs[j][:sizes[j]], want) {
						t.Fatalf("datagram %d: %d bytes, want %d", seen+j, sizes[j], len(want))
					}
					if ap := eps[j].(*conn.StdNetEndpoint).AddrPort; ap != peerAddr {
						t.Fatalf("datagram %d from %v, want %v", seen+j, ap, peerAddr)
					}
				}
				seen += k
			}
		})
	}
}

func TestSocketBindClose(t *testing.T) {
	b, addr := handedBind(t)
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Fatalf("second Open: %v, want ErrBindAlreadyOpen", err)
	}
	done := make(chan error, 1)
	go func() {
		bufs, sizes, eps := receiveBufs()
		_, err := fns[0](bufs, sizes, eps)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it block in recvmmsg
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		// wireguard-go stops its receive routine only on net.ErrClosed.
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked receive after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the blocked receive")
	}
	ep, _ := b.ParseEndpoint("127.0.0.1:9")
	if err := b.Send([][]byte{wgPacket(0)}, ep); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send after Close: %v, want net.ErrClosed", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// The handed-in socket outlives Close: a re-open (the device's
	// listen-port update) gets the same port and still receives.
	fns, port, err := b.Open(0)
	if err != nil || port != addr.Port() {
		t.Fatalf("re-Open: port %d, %v; want %d", port, err, addr.Port())
	}
	defer b.Close()
	peer, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if _, err := peer.Write(wgPacket(3)); err != nil {
		t.Fatal(err)
	}
	bufs, sizes, eps := receiveBufs()
	if k, err := fns[0](bufs, sizes, eps); err != nil || k != 1 || !bytes.Equal(bufs[0][:sizes[0]], wgPacket(3)) {
		t.Fatalf("receive after re-Open: %d, %v", k, err)
	}
}

func TestSocketBindRefuses(t *testing.T) {
	tcp, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	tf, _ := tcp.File()
	defer tf.Close()
	v6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer v6.Close()
	vf, _ := v6.File()
	defer vf.Close()
	plain, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for _, tc := range []struct {
		name string
		f    *os.File
	}{{"TCP listener", tf}, {"IPv6 UDP socket", vf}, {"regular file", plain}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewSocketBind(tc.f); err == nil {
				t.Fatalf("NewSocketBind accepted a %s", tc.name)
			}
		})
	}
	b, _ := handedBind(t)
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ep, err := b.ParseEndpoint("[2001:db8::1]:51820")
	if err != nil {
		t.Fatalf("an IPv6 endpoint must parse (a peer's candidate): %v", err)
	}
	if err := b.Send([][]byte{wgPacket(0)}, ep); !errors.Is(err, errNotIPv4) {
		t.Fatalf("send to IPv6 over the IPv4 socket: %v", err)
	}
}

// The control tap (STUN for the NAT layer) works over the handed-in
// socket as over StdNetBind: STUN leaves the WireGuard batch, and SendTo
// answers from the same socket.
func TestSocketBindControlTap(t *testing.T) {
	sb, addr := handedBind(t)
	b := newBindOver(sb, 4)
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	peer := loopbackUDP(t)
	stun := make([]byte, 20)
	binary.BigEndian.PutUint16(stun, 0x0001) // binding request
	binary.BigEndian.PutUint32(stun[4:], stunMagicCookie)
	for _, p := range [][]byte{stun, wgPacket(1)} {
		if _, err := peer.WriteToUDPAddrPort(p, addr); err != nil {
			t.Fatal(err)
		}
	}
	bufs, sizes, eps := receiveBufs()
	wg := 0
	for wg == 0 {
		k, err := fns[0](bufs, sizes, eps)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < k; i++ {
			if sizes[i] > 0 {
				if !bytes.Equal(bufs[i][:sizes[i]], wgPacket(1)) {
					t.Fatalf("WireGuard batch holds %x", bufs[i][:sizes[i]])
				}
				wg++
			}
		}
	}
	select {
	case d := <-b.Control():
		if d.Kind != KindSTUN || d.From != peer.LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("control datagram %+v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("STUN did not reach the control queue")
	}
	if err := b.SendTo([]byte("answer"), peer.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 64)
	k, from, err := peer.ReadFromUDPAddrPort(got)
	if err != nil || string(got[:k]) != "answer" || from != addr {
		t.Fatalf("SendTo: %q from %v (%v), want \"answer\" from %v", got[:k], from, err, addr)
	}
}

// Runs of equal-sized datagrams leave segmented (UDP_SEGMENT); a receiver
// without GRO still gets each datagram whole and in order, the short last
// one included.
func TestSocketBindGSO(t *testing.T) {
	b, addr := handedBind(t)
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	peer := loopbackUDP(t)
	peer.SetReadBuffer(8 << 20)
	ep, _ := b.ParseEndpoint(peer.LocalAddr().String())
	for _, tc := range []struct {
		name  string
		sizes []int
	}{
		{"one run, short tail", append(repeatInt(1200, gsoMaxSegments+5), 300)},
		{"runs broken by a longer datagram", []int{1000, 1000, 1400, 1400, 1400, 200, 1000}},
		{"a full batch", repeatInt(1420, socketBatch)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var bufs [][]byte
			for i, n := range tc.sizes {
				p := make([]byte, n)
				p[0] = 4
				binary.BigEndian.PutUint32(p[8:], uint32(i))
				bufs = append(bufs, p)
			}
			if err := b.Send(bufs, ep); err != nil {
				t.Fatal(err)
			}
			if b.noGSO.Load() {
				t.Fatal("the kernel refused segmented sends on loopback")
			}
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, 65536)
			for i := range bufs {
				k, from, err := peer.ReadFromUDPAddrPort(got)
				if err != nil {
					t.Fatalf("datagram %d of %d: %v", i, len(bufs), err)
				}
				if !bytes.Equal(got[:k], bufs[i]) || from != addr {
					t.Fatalf("datagram %d: %d bytes (index %d) from %v, want %d bytes from %v", i, k,
						binary.BigEndian.Uint32(got[8:]), from, len(bufs[i]), addr)
				}
			}
		})
	}
}

func repeatInt(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}
