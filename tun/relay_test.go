package tun

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

func TestRelayEndpointText(t *testing.T) {
	k, _ := GeneratePrivateKey()
	ep := &RelayEndpoint{Relay: netip.MustParseAddrPort("198.18.1.1:51820"), Peer: k.PublicKey()}
	got, err := ParseRelayEndpoint(ep.String())
	if err != nil || *got != *ep {
		t.Fatalf("round trip of %s: %+v %v", ep, got, err)
	}
	b := NewBind(1)
	parsed, err := b.ParseEndpoint(ep.String())
	if _, ok := parsed.(*RelayEndpoint); err != nil || !ok {
		t.Fatalf("Bind.ParseEndpoint(%s) = %T %v", ep, parsed, err)
	}
	for _, bad := range []string{"relay:zz@198.18.1.1:1", "relay:" + k.hexString(), "relay:" + k.hexString() + "@nohost", "relay:00@1.2.3.4:5"} {
		if _, err := ParseRelayEndpoint(bad); err == nil {
			t.Errorf("ParseRelayEndpoint(%q) accepted", bad)
		}
	}
	if ClassifyPacket([]byte{RelayMarker, 1, 0, 0}) != KindRelay {
		t.Error("relay marker not classified as relay")
	}
}

// echoHandler is a stand-in for the NAT layer's relay handler: it seals
// with a fixed 4-byte header and opens anything after it as a WireGuard
// datagram from the peer it names.
type echoHandler struct{ peer Key }

func (h echoHandler) Seal(dst, payload []byte, ep *RelayEndpoint) ([]byte, error) {
	return append(append(dst, RelayMarker, 2, 0, 0), payload...), nil
}

func (h echoHandler) Open(pkt []byte, from netip.AddrPort) ([]byte, conn.Endpoint, bool) {
	if len(pkt) < 4 || pkt[1] != 2 {
		return nil, nil, false
	}
	return pkt[4:], &RelayEndpoint{Relay: from, Peer: h.peer}, true
}

// TestBindRelayPath: a real Bind sends to a relayed endpoint (the datagram
// leaves sealed, to the relay's address, even when larger than a segment
// offload would take), and a relay packet that arrives is delivered in
// place, as a WireGuard datagram from the virtual endpoint.
func TestBindRelayPath(t *testing.T) {
	k, _ := GeneratePrivateKey()
	b := NewBind(4)
	b.SetRelayHandler(echoHandler{peer: k.PublicKey()})
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	relay, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	relayAddr := netip.MustParseAddrPort(relay.LocalAddr().String())

	// Out: two full-size datagrams in one batch.
	ep := &RelayEndpoint{Relay: relayAddr, Peer: k.PublicKey()}
	big := wgHeader(4, 1452)
	if err := b.Send([][]byte{big, big}, ep); err != nil {
		t.Fatalf("send to relayed endpoint: %v", err)
	}
	buf := make([]byte, 4096)
	for i := 0; i < 2; i++ {
		relay.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := relay.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("relay got nothing: %v", err)
		}
		if n != len(big)+4 || buf[0] != RelayMarker || !bytes.Equal(buf[4:n], big) {
			t.Fatalf("relay got %d bytes %x…, want the sealed datagram", n, buf[:8])
		}
	}

	// In: a relay packet carrying a WireGuard datagram, and one the
	// handler refuses.
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)}
	inner := wgHeader(4, 96)
	relay.WriteTo(append([]byte{RelayMarker, 9, 0, 0}, inner...), to)
	relay.WriteTo(append([]byte{RelayMarker, 2, 0, 0}, inner...), to)
	got := make(chan [2]any, 8)
	for _, fn := range fns {
		go func() {
			bufs := make([][]byte, b.BatchSize())
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			sizes := make([]int, len(bufs))
			eps := make([]conn.Endpoint, len(bufs))
			for {
				n, err := fn(bufs, sizes, eps)
				if err != nil {
					return
				}
				for i := 0; i < n; i++ {
					if sizes[i] > 0 {
						got <- [2]any{append([]byte(nil), bufs[i][:sizes[i]]...), eps[i]}
					}
				}
			}
		}()
	}
	select {
	case g := <-got:
		if !bytes.Equal(g[0].([]byte), inner) {
			t.Fatalf("delivered %x…, want the inner datagram", g[0].([]byte)[:8])
		}
		rep, ok := g[1].(*RelayEndpoint)
		if !ok || rep.Peer != k.PublicKey() || rep.Relay != relayAddr {
			t.Fatalf("delivered from %v, want the peer via the relay", g[1])
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("relayed datagram never delivered; stats %+v", b.Stats())
	}
	time.Sleep(100 * time.Millisecond)
	if st := b.Stats(); st.RelayIn != 2 || st.RelayDelivered != 1 {
		t.Fatalf("stats %+v, want 2 relay packets in, 1 delivered", st)
	}
}
