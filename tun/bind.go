package tun

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// stunMagicCookie is the fixed value at bytes 4..8 of every RFC 5389 STUN
// message; it is what lets one UDP port carry STUN beside WireGuard.
const stunMagicCookie = 0x2112A442

// PacketKind says what a datagram arriving on the WireGuard socket is.
type PacketKind uint8

const (
	// KindWireGuard packets stay in the batch for wireguard-go.
	KindWireGuard PacketKind = iota
	// KindSTUN packets go to the control queue for the NAT layer.
	KindSTUN
	// KindUnknown packets are dropped and counted.
	KindUnknown
	// KindRelay packets carry a relay header (see RelayHandler).
	KindRelay
)

func (k PacketKind) String() string {
	switch k {
	case KindWireGuard:
		return "wireguard"
	case KindSTUN:
		return "stun"
	case KindRelay:
		return "relay"
	default:
		return "unknown"
	}
}

// ClassifyPacket tells WireGuard from STUN without copying. WireGuard is
// checked first because it is the hot path: its first four bytes are a
// little-endian message type 1..4, so bytes 1..3 are zero. A STUN message
// starts with two zero bits and carries the magic cookie at bytes 4..8.
func ClassifyPacket(b []byte) PacketKind {
	if len(b) >= 4 && b[0] >= 1 && b[0] <= 4 && b[1] == 0 && b[2] == 0 && b[3] == 0 {
		return KindWireGuard
	}
	if len(b) >= 20 && b[0]&0xC0 == 0 && binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie {
		return KindSTUN
	}
	if len(b) >= 4 && b[0] == RelayMarker {
		return KindRelay
	}
	return KindUnknown
}

// Datagram is a non-WireGuard packet received on the WireGuard socket.
type Datagram struct {
	Kind PacketKind
	From netip.AddrPort
	Data []byte
}

// BindStats counts what the Bind took out of the WireGuard stream.
type BindStats struct {
	Control        uint64 // queued for the control consumer
	ControlDropped uint64 // queue was full
	Unknown        uint64 // neither WireGuard nor a known control protocol
	RelayIn        uint64 // relay packets handed to the relay handler
	RelayDelivered uint64 // of those, WireGuard datagrams delivered here
}

// DefaultControlQueueLen bounds the control queue: STUN is a few packets per
// peer per minute, so a full queue means a flood, and dropping is right.
const DefaultControlQueueLen = 256

// Bind is wireguard-go's StdNetBind with a tap for control traffic. It keeps
// StdNetBind's batching, UDP GSO/GRO and sticky source addresses by wrapping
// rather than re-implementing it: each receive batch is scanned in place,
// and a non-WireGuard packet is copied to a bounded queue and removed from
// the batch by zeroing its size (wireguard-go skips anything shorter than a
// message header), so the rest of the batch is never moved or copied.
type Bind struct {
	inner   conn.Bind
	control chan Datagram

	controlled     atomic.Uint64
	controlDropped atomic.Uint64
	unknown        atomic.Uint64
	relayIn        atomic.Uint64
	relayDelivered atomic.Uint64

	relay          atomic.Pointer[RelayHandler]
	controlHandler atomic.Pointer[ControlHandler]
	// relayBufs recycles send buffers for relayed datagrams: wireguard-go's
	// buffers have no headroom for the relay header.
	relayBufs sync.Pool

	// out and in bound what wireguard-go holds (inflight.go); nil when
	// the Bind serves no Device (tests).
	out, in *inflight
}

var _ conn.Bind = (*Bind)(nil)

// NewBind returns a Bind over a fresh StdNetBind.
func NewBind(queueLen int) *Bind {
	return newBindOver(conn.NewStdNetBind(), queueLen)
}

// newBindOver puts the control tap over another bind (SocketBind).
func newBindOver(inner conn.Bind, queueLen int) *Bind {
	if queueLen <= 0 {
		queueLen = DefaultControlQueueLen
	}
	return &Bind{inner: inner, control: make(chan Datagram, queueLen)}
}

// Control delivers the non-WireGuard datagrams (STUN) received on the
// socket while no ControlHandler is installed. The channel stays open
// across socket re-opens.
func (b *Bind) Control() <-chan Datagram { return b.control }

// Stats returns the control-path counters.
func (b *Bind) Stats() BindStats {
	return BindStats{
		Control:        b.controlled.Load(),
		ControlDropped: b.controlDropped.Load(),
		Unknown:        b.unknown.Load(),
		RelayIn:        b.relayIn.Load(),
		RelayDelivered: b.relayDelivered.Load(),
	}
}

// Open opens the inner sockets and wraps each receive function.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.inner.Open(port)
	if err != nil {
		return nil, 0, err
	}
	wrapped := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		wrapped[i] = b.filter(fn)
	}
	return wrapped, actual, nil
}

func (b *Bind) filter(next conn.ReceiveFunc) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		if b.in != nil {
			b.in.wait()
		}
		n, err := next(packets, sizes, eps)
		data := 0
		for i := 0; i < n; i++ {
			pkt := packets[i][:sizes[i]]
			kind := ClassifyPacket(pkt)
			if kind == KindWireGuard {
				if isTransportData(pkt) {
					data++
				}
				continue
			}
			if kind == KindRelay {
				b.openRelayed(packets, sizes, eps, i)
				if isTransportData(packets[i][:sizes[i]]) {
					data++
				}
				continue
			}
			sizes[i] = 0
			if kind == KindUnknown {
				b.unknown.Add(1)
				continue
			}
			b.enqueue(kind, pkt, eps[i])
		}
		if b.in != nil {
			b.in.took(data)
		}
		return n, err
	}
}

// openRelayed hands a relay packet to the handler and, when it carries a
// WireGuard datagram for this machine, moves the datagram to the start of
// its buffer in place and marks it as coming from the relayed endpoint.
func (b *Bind) openRelayed(packets [][]byte, sizes []int, eps []conn.Endpoint, i int) {
	pkt := packets[i][:sizes[i]]
	sizes[i] = 0
	h := b.relayHandler()
	if h == nil {
		b.unknown.Add(1)
		return
	}
	b.relayIn.Add(1)
	payload, ep, ok := h.Open(pkt, endpointAddrPort(eps[i]))
	if !ok || ClassifyPacket(payload) != KindWireGuard {
		return
	}
	sizes[i] = copy(packets[i], payload)
	eps[i] = ep
	b.relayDelivered.Add(1)
}

func endpointAddrPort(ep conn.Endpoint) netip.AddrPort {
	if std, ok := ep.(*conn.StdNetEndpoint); ok {
		return std.AddrPort
	}
	ap, _ := netip.ParseAddrPort(ep.DstToString())
	return ap
}

// ControlHandler takes the control datagrams (STUN) straight off the
// receive path, so that the NAT layer can sort them into queues of its own
// (authenticated probes apart from anyone's binding requests) before a
// flood of one kind fills a queue that the other needs. It must not block,
// and data is the socket's buffer: valid only during the call.
type ControlHandler interface {
	HandleControl(data []byte, from netip.AddrPort)
}

// SetControlHandler installs the NAT layer's control handler; from then
// on control datagrams go to it instead of the Control queue.
func (b *Bind) SetControlHandler(h ControlHandler) { b.controlHandler.Store(&h) }

func (b *Bind) enqueue(kind PacketKind, pkt []byte, ep conn.Endpoint) {
	if h := b.controlHandler.Load(); h != nil {
		b.controlled.Add(1)
		(*h).HandleControl(pkt, endpointAddrPort(ep))
		return
	}
	d := Datagram{Kind: kind, From: endpointAddrPort(ep), Data: append([]byte(nil), pkt...)}
	select {
	case b.control <- d:
		b.controlled.Add(1)
	default:
		b.controlDropped.Add(1)
	}
}

// SendTo sends one non-WireGuard datagram from the WireGuard socket, so
// that a STUN answer or probe leaves through the same NAT mapping that
// WireGuard's own packets use.
func (b *Bind) SendTo(data []byte, to netip.AddrPort) error {
	ep, err := b.inner.ParseEndpoint(to.String())
	if err != nil {
		return fmt.Errorf("send to %v: %w", to, err)
	}
	if err := b.inner.Send([][]byte{data}, ep); err != nil {
		return fmt.Errorf("send %d bytes to %v: %w", len(data), to, err)
	}
	return nil
}

func (b *Bind) Close() error              { return b.inner.Close() }
func (b *Bind) SetMark(mark uint32) error { return b.inner.SetMark(mark) }

// Send sends WireGuard datagrams; those for a relayed endpoint are wrapped
// for the relay.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	if b.out != nil {
		data := 0
		for _, buf := range bufs {
			if isTransportData(buf) {
				data++
			}
		}
		b.out.handedOn(data)
	}
	if r, ok := ep.(*RelayEndpoint); ok {
		return b.sendRelayed(bufs, r)
	}
	return b.inner.Send(bufs, ep)
}

// ParseEndpoint accepts ip:port and the relayed form relay:<key>@ip:port.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if IsRelayEndpoint(s) {
		return ParseRelayEndpoint(s)
	}
	return b.inner.ParseEndpoint(s)
}
func (b *Bind) BatchSize() int { return b.inner.BatchSize() }
