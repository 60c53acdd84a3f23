package tun

import (
	"errors"
	"net"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// UDP segmentation offload on the handed-in socket: a run of equal-sized
// datagrams to one endpoint leaves as one sendmmsg slot with a
// UDP_SEGMENT control message, which the kernel splits late (or a veth
// carries whole to a receiver with UDP GRO). Without it, every
// datagram costs the receiving side a slot of its own: the rootless
// machine's sending half ran at a quarter of a kernel machine's.
const (
	gsoMaxSegments = 64         // wireguard-go's udpSegmentMaxDatagrams
	gsoMaxBytes    = 65535 - 28 // IPv4 and UDP headers inside 64 KiB
)

var gsoCmsgLen = unix.CmsgSpace(2)

// sendGSO coalesces bufs into segmented messages and writes them. Any
// error is returned as is; the caller turns GSO off on EIO (a device
// without checksum offload) and sends the plain way.
func (b *SocketBind) sendGSO(pc *ipv4.PacketConn, bufs [][]byte, to *net.UDPAddr) error {
	total := 0
	for _, p := range bufs {
		total += len(p)
	}
	fp := b.flat.Get().(*[]byte)
	defer b.flat.Put(fp)
	if cap(*fp) < total {
		*fp = make([]byte, 0, total)
	}
	flat := (*fp)[:0]
	mp := b.msgs.Get().(*[]ipv4.Message)
	defer b.msgs.Put(mp)
	op := b.oob.Get().(*[]byte)
	defer b.oob.Put(op)
	msgs := (*mp)[:0]
	for i := 0; i < len(bufs); {
		seg, start := len(bufs[i]), len(flat)
		flat = append(flat, bufs[i]...)
		i++
		count := 1
		for i < len(bufs) && count < gsoMaxSegments && len(bufs[i]) <= seg && len(flat)-start+len(bufs[i]) <= gsoMaxBytes {
			flat = append(flat, bufs[i]...)
			short := len(bufs[i]) < seg
			i++
			count++
			if short {
				break // only the last segment may be shorter
			}
		}
		if len(msgs) == socketBatch {
			if err := writeAll(pc, msgs); err != nil {
				return err
			}
			msgs = msgs[:0]
		}
		k := len(msgs)
		msgs = msgs[:k+1]
		m := &msgs[k]
		m.Buffers[0], m.Addr, m.N, m.OOB = flat[start:], to, 0, nil
		if count > 1 {
			m.OOB = segmentCmsg((*op)[k*gsoCmsgLen:(k+1)*gsoCmsgLen], seg)
		}
	}
	return writeAll(pc, msgs)
}

// segmentCmsg writes a UDP_SEGMENT control message for size into b.
func segmentCmsg(b []byte, size int) []byte {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = uint16(size)
	return b
}

func writeAll(pc *ipv4.PacketConn, msgs []ipv4.Message) error {
	for start := 0; start < len(msgs); {
		n, err := pc.WriteBatch(msgs[start:], 0)
		if err != nil {
			return err
		}
		start += n
	}
	return nil
}

// gsoUnsupported is the error after which StdNetBind, too, stops
// segmenting: udp_send_skb's EIO for a device without checksum offload.
func gsoUnsupported(err error) bool { return errors.Is(err, unix.EIO) }
