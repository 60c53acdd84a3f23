package tun

import (
	"os"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// netstackQueueLen bounds the packets the stack has sent and wireguard-go
// has not read yet. A sender that finds it full waits (see WritePackets),
// so it only needs to cover a few batches.
const netstackQueueLen = 1024

// linkEndpoint is the stack's link layer: a queue of outbound packets that
// wireguard-go drains in batches, and batched inbound delivery through GRO.
//
// Unlike gVisor's channel endpoint it blocks a sender on a full queue instead
// of dropping: a drop here is a loss that TCP answers by halving its window,
// while waiting is the backpressure a kernel qdisc would give.
type linkEndpoint struct {
	mtu        atomic.Uint32
	dispatcher atomic.Pointer[stack.NetworkDispatcher]

	out       chan *stack.PacketBuffer
	done      chan struct{}
	closeOnce sync.Once

	// gros holds GRO engines for concurrent Writes: wireguard-go writes
	// from one goroutine per peer, and a gro.GRO is not safe for
	// concurrent use. Pooling them avoids a lock on the inbound path.
	gros sync.Pool

	gro, rxChecksumOffload bool
	gso                    stack.SupportedGSO

	readMu    sync.Mutex
	pending   *stack.PacketBuffer // +checklocks:readMu
	seg, nseg int                 // next segment of pending, and count
	split     gsoSplit            // pending's headers, when it is TCP GSO
}

var (
	_ stack.LinkEndpoint = (*linkEndpoint)(nil)
	_ stack.GSOEndpoint  = (*linkEndpoint)(nil)
)

func newLinkEndpoint(mtu uint32, t netstackTuning) *linkEndpoint {
	e := &linkEndpoint{
		out:  make(chan *stack.PacketBuffer, netstackQueueLen),
		done: make(chan struct{}),
		// gVisor's GRO stalled TCP here when it had to verify the
		// checksums itself (TestNetstackTransmitChecksums with GRO on
		// and offload off), so it only runs with the offload.
		gro:               t.gro && t.rxChecksumOffload,
		gso:               t.gso,
		rxChecksumOffload: t.rxChecksumOffload,
	}
	e.mtu.Store(mtu)
	e.gros.New = func() any {
		g := new(gro.GRO)
		g.Init(e.gro)
		return g
	}
	return e
}

// read moves queued outbound packets into bufs. It blocks for the first
// packet only, so a lone packet (a ping, a handshake) leaves at once. A
// host-GSO TCP segment is split into as many packets as fit; the rest waits
// in pending for the next read. wireguard-go reads from one goroutine; the
// mutex only keeps a misuse from corrupting pending.
func (e *linkEndpoint) read(bufs [][]byte, sizes []int, offset int) (int, error) {
	e.readMu.Lock()
	defer e.readMu.Unlock()
	n := 0
	for n < len(bufs) {
		if e.pending == nil {
			select {
			case e.pending = <-e.out:
			default:
				if n > 0 {
					return n, nil
				}
				select {
				case e.pending = <-e.out:
				case <-e.done:
					return 0, os.ErrClosed
				}
			}
			e.seg, e.nseg = 0, 1
			if isTCPGSO(e.pending) {
				e.nseg = e.split.start(e.pending)
			}
		}
		pkt := e.pending
		if !isTCPGSO(pkt) {
			if size, ok := copyPacket(bufs[n][offset:], pkt); ok {
				sizes[n] = size
				n++
			}
			e.seg = e.nseg
		}
		for e.seg < e.nseg && n < len(bufs) {
			size, ok := e.split.writeSegment(bufs[n][offset:], e.seg)
			if !ok {
				// A malformed or oversized segment: drop the rest,
				// TCP will retransmit.
				e.seg = e.nseg
				break
			}
			sizes[n] = size
			n++
			e.seg++
		}
		if e.seg == e.nseg {
			pkt.DecRef()
			e.pending = nil
			e.split = gsoSplit{}
		}
	}
	return n, nil
}

// copyPacket copies pkt into dst without the allocations of AsSlices or
// ToView. It reports false for a packet larger than dst, which is dropped.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) (int, bool) {
	size := pkt.Size()
	if size > len(dst) {
		return 0, false
	}
	views, skip := pkt.AsViewList()
	n := 0
	for v := views.Front(); v != nil && n < size; v = v.Next() {
		b := v.AsSlice()
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		n += copy(dst[n:size], b[skip:])
		skip = 0
	}
	return n, n == size
}

// write injects IPv4 packets that WireGuard decrypted. Consecutive segments
// of one TCP flow are coalesced (GRO), so the stack processes one large
// segment instead of up to a batch of small ones.
func (e *linkEndpoint) write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-e.done:
		return 0, os.ErrClosed
	default:
	}
	d := e.dispatcher.Load()
	if d == nil {
		return len(bufs), nil
	}
	g := e.gros.Get().(*gro.GRO)
	g.Dispatcher = *d
	for _, buf := range bufs {
		packet := buf[offset:]
		// Only IPv4 is configured; anything else would be dropped by
		// the stack anyway.
		if len(packet) < header.IPv4MinimumSize || packet[0]>>4 != 4 {
			continue
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
			Payload: buffer.MakeWithData(packet),
		})
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		// WireGuard authenticated every byte of the packet (Poly1305)
		// after the peer's stack built it, so checking the TCP and UDP
		// checksums again only costs time.
		pkt.RXChecksumValidated = e.rxChecksumOffload
		g.Enqueue(pkt)
		pkt.DecRef()
	}
	g.Flush()
	g.Dispatcher = nil
	e.gros.Put(g)
	return len(bufs), nil
}

func (e *linkEndpoint) close() {
	e.closeOnce.Do(func() {
		close(e.done)
	})
}

// drain releases packets nobody will read any more.
func (e *linkEndpoint) drain() {
	for {
		select {
		case pkt := <-e.out:
			pkt.DecRef()
		default:
			return
		}
	}
}

// WritePackets queues outbound packets for wireguard-go, waiting while the
// queue is full.
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		select {
		case e.out <- pkt.IncRef():
			n++
		case <-e.done:
			pkt.DecRef()
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			return n, nil
		}
	}
	return n, nil
}

func (e *linkEndpoint) MTU() uint32 { return e.mtu.Load() }

func (e *linkEndpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength is zero: packets are bare IP, as on a TUN.
func (e *linkEndpoint) MaxHeaderLength() uint16 { return 0 }

func (e *linkEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

func (e *linkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities: received checksums need no check (see write). Transmit
// checksums are still computed, because a kernel-TUN peer verifies them.
func (e *linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	if e.rxChecksumOffload {
		return stack.CapabilityRXChecksumOffload
	}
	return 0
}

func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
		return
	}
	e.dispatcher.Store(&d)
}

func (e *linkEndpoint) IsAttached() bool { return e.dispatcher.Load() != nil }

func (e *linkEndpoint) Wait() {}

func (e *linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

func (e *linkEndpoint) AddHeader(*stack.PacketBuffer) {}

func (e *linkEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

func (e *linkEndpoint) Close() {
	e.close()
	e.drain()
}

func (e *linkEndpoint) SetOnCloseAction(func()) {}

// GSOMaxSize and SupportedGSO choose the segmentation offload. With gVisor
// GSO, TCP keeps one large segment per write and splits it into MTU-sized
// packets in one pass, each still going through the IP layer; with host GSO
// the stack hands over the large segment and read splits it (netstack_gso.go).
func (e *linkEndpoint) GSOMaxSize() uint32 {
	if e.gso == stack.HostGSOSupported {
		return netstackGSOMaxSize
	}
	return stack.GVisorGSOMaxSize
}

func (e *linkEndpoint) SupportedGSO() stack.SupportedGSO { return e.gso }
