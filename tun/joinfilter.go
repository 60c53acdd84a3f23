package tun

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// A machine joining with a token gets a temporary /32 in meshaddr.Join(),
// the part of the mesh that belongs to no machine; a packet from it may
// reach only the join port, nothing else on the host, its containers, or
// the rest of the mesh.

// DefaultJoinPort is the TCP port of the join call on the mesh address.
const DefaultJoinPort = 51821

// joinFilter wraps the TUN (kernel or netstack) and drops, on the way in,
// every packet from the join range except TCP to the join port on this
// machine's address. It sits between WireGuard and the host, so it holds
// in both modes and needs no firewall rules. Replies need no rule: the
// host answers only what it received.
type joinFilter struct {
	wgtun.Device
	prefix  netip.Prefix
	local   [4]byte
	port    uint16
	dropped atomic.Uint64
}

func newJoinFilter(inner wgtun.Device, prefix netip.Prefix, local netip.Addr, port uint16) *joinFilter {
	return &joinFilter{Device: inner, prefix: prefix.Masked(), local: local.As4(), port: port}
}

func (f *joinFilter) Write(bufs [][]byte, offset int) (int, error) {
	kept := bufs
	for i, b := range bufs {
		if f.allowed(b[offset:]) {
			if len(kept) < len(bufs) {
				kept = append(kept, b)
			}
			continue
		}
		f.dropped.Add(1)
		if len(kept) == len(bufs) {
			// First drop in this batch: copy the slice headers seen so
			// far. Batches without join traffic never get here.
			kept = append(make([][]byte, 0, len(bufs)), bufs[:i]...)
		}
	}
	if len(kept) == 0 {
		return len(bufs), nil
	}
	if _, err := f.Device.Write(kept, offset); err != nil {
		return 0, err
	}
	return len(bufs), nil
}

// allowed is on the receive hot path: a packet not from the join range
// costs one length check and a prefix comparison.
func (f *joinFilter) allowed(pkt []byte) bool {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return true // not IPv4: WireGuard's allowed IPs hold only IPv4 mesh prefixes today
	}
	src := netip.AddrFrom4([4]byte(pkt[12:16]))
	if !f.prefix.Contains(src) {
		return true
	}
	ihl := int(pkt[0]&0x0f) * 4
	const protoTCP = 6
	if pkt[9] != protoTCP || [4]byte(pkt[16:20]) != f.local || len(pkt) < ihl+4 || ihl < 20 {
		return false
	}
	// Fragments beyond the first carry no port: refuse them too.
	if binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0 {
		return false
	}
	return binary.BigEndian.Uint16(pkt[ihl+2:ihl+4]) == f.port
}
