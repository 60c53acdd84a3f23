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

// gsoSplit is the TCP GSO packet being split: its headers, payload and a
// cursor into the payload's views are taken once per packet, not once per
// segment (reading a PacketBuffer's headers cost 3 % of the sending agent).
type gsoSplit struct {
	ip      header.IPv4
	tcp     header.TCP
	payload int
	mss     int
	nseg    int
	// cur and curOff point at the next payload byte: segments are written
	// in order, so each copy continues where the last one ended.
	cur    *buffer.View
	curOff int
}

// start prepares pkt for splitting and returns its number of segments.
func (g *gsoSplit) start(pkt *stack.PacketBuffer) int {
	g.ip = header.IPv4(pkt.NetworkHeader().Slice())
	g.tcp = header.TCP(pkt.TransportHeader().Slice())
	g.payload = pkt.Data().Size()
	g.mss = int(pkt.GSOOptions.MSS)
	g.nseg = 1
	if g.mss > 0 && g.payload > g.mss {
		g.nseg = (g.payload + g.mss - 1) / g.mss
	} else {
		g.mss = g.payload
	}
	views, skip := pkt.AsViewList()
	skip += len(g.ip) + len(g.tcp)
	g.cur, g.curOff = views.Front(), 0
	for g.cur != nil && skip >= g.cur.Size() {
		skip -= g.cur.Size()
		g.cur = g.cur.Next()
	}
	g.curOff = skip
	return g.nseg
}

// next copies the next n payload bytes into dst.
func (g *gsoSplit) next(dst []byte) bool {
	n := 0
	for n < len(dst) && g.cur != nil {
		b := g.cur.AsSlice()[g.curOff:]
		c := copy(dst[n:], b)
		n += c
		g.curOff += c
		if g.curOff == g.cur.Size() {
			g.cur, g.curOff = g.cur.Next(), 0
		}
	}
	return n == len(dst)
}

// writeSegment writes segment seg (the next one in order) into dst and
// returns its length, or false if dst is too small or the payload ends
// early. Writing straight into wireguard-go's buffer makes this the only
// copy of the payload on the way out, and its checksum is computed while
// the bytes are in cache: the stack builds one 60 KB segment instead of
// ~43 packets through its IP layer.
func (g *gsoSplit) writeSegment(dst []byte, seg int) (int, bool) {
	ip, tcp := g.ip, g.tcp
	off := seg * g.mss
	segLen := min(g.mss, g.payload-off)
	ipLen, tcpLen := len(ip), len(tcp)
	total := ipLen + tcpLen + segLen
	if total > len(dst) || total > 0xffff {
		return 0, false
	}
	copy(dst, ip)
	copy(dst[ipLen:], tcp)
	if !g.next(dst[ipLen+tcpLen : total]) {
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
	if seg != g.nseg-1 {
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
