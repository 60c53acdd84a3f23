package tun

import (
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// netstackGSOMaxSize bounds a TCP segment the stack hands to the link in
// host-GSO mode; the IPv4 total length must stay below 64 KB.
const netstackGSOMaxSize = 60 << 10

// isTCPGSO reports whether pkt is a TCP segment that the link must still
// split into MSS-sized packets and finish the checksum of. In host-GSO mode
// that is every TCP packet, ACKs included: gVisor leaves their checksum
// partial (pseudo-header only), like CHECKSUM_PARTIAL in Linux.
func isTCPGSO(pkt *stack.PacketBuffer) bool {
	return pkt.GSOOptions.Type == stack.GSOTCPv4 && pkt.GSOOptions.NeedsCsum
}

// gsoSegments is the number of packets pkt becomes.
func gsoSegments(pkt *stack.PacketBuffer) int {
	payload := pkt.Data().Size()
	mss := int(pkt.GSOOptions.MSS)
	if mss <= 0 || payload <= mss {
		return 1
	}
	return (payload + mss - 1) / mss
}

// writeGSOSegment writes segment seg of the TCP GSO packet pkt into dst and
// returns its length, or false if dst is too small. Writing straight into
// wireguard-go's buffer makes this the only copy of the payload on the way
// out, and its checksum is computed while the bytes are in cache: the stack
// builds one 60 KB segment instead of ~43 packets through its IP layer.
func writeGSOSegment(dst []byte, pkt *stack.PacketBuffer, seg, nseg int) (int, bool) {
	ip := header.IPv4(pkt.NetworkHeader().Slice())
	tcp := header.TCP(pkt.TransportHeader().Slice())
	payload := pkt.Data().Size()
	mss := int(pkt.GSOOptions.MSS)
	if nseg == 1 {
		mss = payload
	}
	off := seg * mss
	segLen := min(mss, payload-off)
	ipLen, tcpLen := len(ip), len(tcp)
	total := ipLen + tcpLen + segLen
	if total > len(dst) || total > 0xffff {
		return 0, false
	}
	copy(dst, ip)
	copy(dst[ipLen:], tcp)
	views, hdrOff := pkt.AsViewList()
	if !copyFromViews(dst[ipLen+tcpLen:total], views, hdrOff+ipLen+tcpLen+off) {
		return 0, false
	}

	oip := header.IPv4(dst[:ipLen])
	oip.SetTotalLength(uint16(total))
	oip.SetID(ip.ID() + uint16(seg))
	oip.SetChecksum(0)
	oip.SetChecksum(^oip.CalculateChecksum())

	otcp := header.TCP(dst[ipLen:total])
	otcp.SetSequenceNumber(tcp.SequenceNumber() + uint32(off))
	flags := tcp.Flags()
	if seg != nseg-1 {
		// FIN and PSH belong to the last byte only.
		flags &^= header.TCPFlagFin | header.TCPFlagPsh
	}
	if seg != 0 {
		// CWR is sent once, with the first segment.
		flags &^= header.TCPFlagCwr
	}
	otcp.SetFlags(uint8(flags))
	otcp.SetChecksum(0)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(tcpLen+segLen))
	otcp.SetChecksum(^checksum.Checksum(dst[ipLen:total], xsum))
	return total, true
}

// copyFromViews fills dst from the views, starting skip bytes in.
func copyFromViews(dst []byte, views buffer.ViewList, skip int) bool {
	n := 0
	for v := views.Front(); v != nil && n < len(dst); v = v.Next() {
		b := v.AsSlice()
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		n += copy(dst[n:], b[skip:])
		skip = 0
	}
	return n == len(dst)
}
