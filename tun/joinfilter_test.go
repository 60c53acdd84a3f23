package tun

import (
	"encoding/binary"
	"net/netip"
	"testing"

	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// recordingTUN keeps what reached the host side.
type recordingTUN struct {
	wgtun.Device
	got [][]byte
}

func (r *recordingTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		r.got = append(r.got, b[offset:])
	}
	return len(bufs), nil
}

func ipv4Packet(src, dst string, proto byte, dport uint16, fragOffset uint16) []byte {
	p := make([]byte, 40)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[6:8], fragOffset)
	p[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[22:24], dport)
	return p
}

func TestJoinFilter(t *testing.T) {
	const tcp, udp, icmp = 6, 17, 1
	local := "10.210.1.1"
	tests := []struct {
		name string
		pkt  []byte
		pass bool
	}{
		{"mesh peer to anything", ipv4Packet("10.210.2.1", local, tcp, 22, 0), true},
		{"mesh peer to a container", ipv4Packet("10.210.2.1", "10.210.1.7", udp, 53, 0), true},
		{"joiner to the join port", ipv4Packet("10.210.0.9", local, tcp, DefaultJoinPort, 0), true},
		{"joiner to ssh", ipv4Packet("10.210.0.9", local, tcp, 22, 0), false},
		{"joiner udp to the join port", ipv4Packet("10.210.0.9", local, udp, DefaultJoinPort, 0), false},
		{"joiner ping", ipv4Packet("10.210.0.9", local, icmp, 0, 0), false},
		{"joiner to a container", ipv4Packet("10.210.0.9", "10.210.1.7", tcp, DefaultJoinPort, 0), false},
		{"joiner to another machine", ipv4Packet("10.210.0.9", "10.210.2.1", tcp, DefaultJoinPort, 0), false},
		{"joiner later fragment", ipv4Packet("10.210.0.9", local, tcp, DefaultJoinPort, 100), false},
		{"joiner truncated header", ipv4Packet("10.210.0.9", local, tcp, DefaultJoinPort, 0)[:21], false},
	}
	for _, tt := range tests {
		rec := &recordingTUN{}
		f := newJoinFilter(rec, meshaddr.Join(), netip.MustParseAddr(local), DefaultJoinPort)
		const offset = 16
		buf := append(make([]byte, offset), tt.pkt...)
		n, err := f.Write([][]byte{buf}, offset)
		if err != nil || n != 1 {
			t.Fatalf("%s: Write = %d, %v; want the packet consumed", tt.name, n, err)
		}
		if passed := len(rec.got) == 1; passed != tt.pass {
			t.Errorf("%s: passed = %v, want %v", tt.name, passed, tt.pass)
		}
	}
}

func TestJoinFilterKeepsBatchOrder(t *testing.T) {
	rec := &recordingTUN{}
	f := newJoinFilter(rec, meshaddr.Join(), netip.MustParseAddr("10.210.1.1"), DefaultJoinPort)
	batch := [][]byte{
		ipv4Packet("10.210.2.1", "10.210.1.1", 6, 1, 0),
		ipv4Packet("10.210.0.5", "10.210.1.1", 6, 22, 0), // dropped
		ipv4Packet("10.210.2.1", "10.210.1.1", 6, 2, 0),
		ipv4Packet("10.210.0.5", "10.210.1.1", 6, 23, 0), // dropped
		ipv4Packet("10.210.3.1", "10.210.1.1", 6, 3, 0),
	}
	if n, err := f.Write(batch, 0); n != len(batch) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if len(rec.got) != 3 {
		t.Fatalf("host got %d packets, want 3", len(rec.got))
	}
	for i, want := range []uint16{1, 2, 3} {
		if got := binary.BigEndian.Uint16(rec.got[i][22:24]); got != want {
			t.Errorf("packet %d has port %d, want %d (order lost)", i, got, want)
		}
	}
	if f.dropped.Load() != 2 {
		t.Errorf("dropped = %d, want 2", f.dropped.Load())
	}
}
