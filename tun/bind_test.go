package tun

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"golang.zx2c4.com/wireguard/conn"
)

func TestClassifyPacket(t *testing.T) {
	bindingRequest := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	tests := []struct {
		name string
		pkt  []byte
		want PacketKind
	}{
		{"handshake initiation", wgHeader(1, 148), KindWireGuard},
		{"handshake response", wgHeader(2, 92), KindWireGuard},
		{"cookie reply", wgHeader(3, 64), KindWireGuard},
		{"transport", wgHeader(4, 32), KindWireGuard},
		{"stun binding request", bindingRequest, KindSTUN},
		{"stun without cookie", append([]byte{0, 1, 0, 0, 1, 2, 3, 4}, make([]byte, 12)...), KindUnknown},
		{"type 5", wgHeader(5, 32), KindUnknown},
		{"type 1 with reserved bits", []byte{1, 0, 1, 0, 0, 0, 0, 0}, KindUnknown},
		{"empty", nil, KindUnknown},
		{"short stun", bindingRequest[:12], KindUnknown},
	}
	for _, tt := range tests {
		if got := ClassifyPacket(tt.pkt); got != tt.want {
			t.Errorf("%s: ClassifyPacket = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestBindTapsControlPacketsInPlace sends a mixed burst to a real Bind
// socket and checks that WireGuard packets stay in the batch untouched,
// STUN reaches the control queue with its source, and garbage is counted.
func TestBindTapsControlPacketsInPlace(t *testing.T) {
	b := NewBind(4)
	b.in = newInflight(1<<20, time.Hour)
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	sender, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)}
	stunMsg := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	keepalive := wgHeader(4, 32)
	burst := [][]byte{wgHeader(4, 64), stunMsg, []byte("garbage garbage garbage garbage!!"), wgHeader(1, 148), keepalive}
	for _, p := range burst {
		if _, err := sender.WriteTo(p, to); err != nil {
			t.Fatal(err)
		}
	}

	// Every socket's receive function runs until Close; results are
	// collected from whichever socket the burst arrived on.
	type result struct{ sizes []int }
	results := make(chan result, 64)
	for _, fn := range fns {
		go func() {
			for {
				bufs := make([][]byte, b.BatchSize())
				for i := range bufs {
					bufs[i] = make([]byte, 2048)
				}
				sizes := make([]int, len(bufs))
				eps := make([]conn.Endpoint, len(bufs))
				n, err := fn(bufs, sizes, eps)
				if err != nil {
					return
				}
				var kept []int
				for i := 0; i < n; i++ {
					if sizes[i] == 0 {
						continue
					}
					if ClassifyPacket(bufs[i][:sizes[i]]) != KindWireGuard {
						kept = append(kept, -sizes[i])
						continue
					}
					kept = append(kept, sizes[i])
				}
				results <- result{kept}
			}
		}()
	}
	wgSizes := map[int]bool{}
	timeout := time.After(5 * time.Second)
	for len(wgSizes) < 3 {
		select {
		case r := <-results:
			for _, size := range r.sizes {
				if size < 0 {
					t.Fatalf("non-WireGuard packet of %d bytes left in the batch", -size)
				}
				wgSizes[size] = true
			}
		case <-timeout:
			t.Fatalf("WireGuard packets seen with sizes %v, want 32, 64 and 148", wgSizes)
		}
	}
	if !wgSizes[32] || !wgSizes[64] || !wgSizes[148] {
		t.Fatalf("WireGuard packets seen with sizes %v, want 32, 64 and 148", wgSizes)
	}
	// Only the transport datagram with a packet counts as held by
	// wireguard-go: not the handshake, the keepalive or the STUN.
	if n := b.in.n.Load(); n != 1 {
		t.Fatalf("inbound count = %d, want 1", n)
	}
	select {
	case d := <-b.Control():
		if d.Kind != KindSTUN || string(d.Data) != string(stunMsg) {
			t.Fatalf("control datagram = %v %q, want the STUN request", d.Kind, d.Data)
		}
		if d.From != netip.MustParseAddrPort(sender.LocalAddr().String()) {
			t.Fatalf("control datagram from %v, want %v", d.From, sender.LocalAddr())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("STUN request never reached the control queue")
	}
	if st := b.Stats(); st.Unknown != 1 || st.Control != 1 {
		t.Fatalf("stats = %+v, want 1 unknown and 1 control", st)
	}
}

func TestBindControlQueueIsBounded(t *testing.T) {
	b := NewBind(2)
	for i := 0; i < 5; i++ {
		b.enqueue(KindSTUN, []byte{byte(i)}, &conn.StdNetEndpoint{})
	}
	if st := b.Stats(); st.Control != 2 || st.ControlDropped != 3 {
		t.Fatalf("stats = %+v, want 2 queued and 3 dropped", st)
	}
}

func wgHeader(msgType uint32, size int) []byte {
	p := make([]byte, size)
	binary.LittleEndian.PutUint32(p, msgType)
	for i := 4; i < size; i++ {
		p[i] = byte(i)
	}
	return p
}

type recordingHandler struct {
	got  [][]byte
	from []netip.AddrPort
}

func (r *recordingHandler) HandleControl(data []byte, from netip.AddrPort) {
	r.got = append(r.got, append([]byte(nil), data...))
	r.from = append(r.from, from)
}

// TestBindControlHandler: once a handler is installed, control datagrams
// go to it (however many), not to the bounded queue.
func TestBindControlHandler(t *testing.T) {
	b := NewBind(2)
	h := &recordingHandler{}
	b.SetControlHandler(h)
	from := netip.MustParseAddrPort("198.18.0.9:4000")
	for i := 0; i < 5; i++ {
		b.enqueue(KindSTUN, []byte{byte(i)}, &conn.StdNetEndpoint{AddrPort: from})
	}
	if len(h.got) != 5 || h.got[4][0] != 4 || h.from[0] != from {
		t.Fatalf("handler got %v from %v, want 5 datagrams from %v", h.got, h.from, from)
	}
	select {
	case d := <-b.Control():
		t.Fatalf("the queue got %v while a handler was installed", d)
	default:
	}
	if st := b.Stats(); st.Control != 5 || st.ControlDropped != 0 {
		t.Fatalf("stats = %+v, want 5 handed over and none dropped", st)
	}
}

// Send hands on what the TUN side counted: transport datagrams with a
// packet, not keepalives or handshakes.
func TestBindSendHandsOn(t *testing.T) {
	b := NewBind(4)
	b.out = newInflight(1<<20, time.Hour)
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ep, err := b.ParseEndpoint(sink.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	b.out.took(5)
	if err := b.Send([][]byte{wgHeader(4, 64), wgHeader(4, 32), wgHeader(1, 148), wgHeader(4, 1400)}, ep); err != nil {
		t.Fatal(err)
	}
	if n := b.out.n.Load(); n != 3 {
		t.Fatalf("outbound count = %d after sending 2 packets of 5, want 3", n)
	}
}
