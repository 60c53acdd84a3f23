package tun

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"golang.zx2c4.com/wireguard/conn"
)

// RelayMarker is the first byte of every relay packet. It cannot start a
// WireGuard message (types 1..4) nor a STUN one (top two bits zero), so
// ClassifyPacket tells the three apart from the first bytes alone.
const RelayMarker = 0xE1

// RelayEndpoint is a virtual WireGuard endpoint: "Peer, reached through
// Relay". Sending to it wraps each datagram in a relay header (sealed by
// the RelayHandler) and sends it to Relay's WireGuard port; datagrams that
// a relay delivers from Peer arrive from such an endpoint, so wireguard-go
// roams to the relayed path by itself, exactly as it does between real
// addresses, and encryption stays end to end.
type RelayEndpoint struct {
	Relay netip.AddrPort // the relay machine's underlay endpoint
	Peer  Key            // the machine at the far end
}

var _ conn.Endpoint = (*RelayEndpoint)(nil)

// relayEndpointPrefix starts the text form "relay:<peer hex>@<relay ip:port>",
// which is what the UAPI shows and what ParseEndpoint accepts.
const relayEndpointPrefix = "relay:"

func (e *RelayEndpoint) String() string {
	return relayEndpointPrefix + e.Peer.hexString() + "@" + e.Relay.String()
}

// ParseRelayEndpoint parses the text form of a RelayEndpoint.
func ParseRelayEndpoint(s string) (*RelayEndpoint, error) {
	rest, ok := strings.CutPrefix(s, relayEndpointPrefix)
	if !ok {
		return nil, fmt.Errorf("relay endpoint %q does not start with %q", s, relayEndpointPrefix)
	}
	keyHex, relay, ok := strings.Cut(rest, "@")
	if !ok {
		return nil, fmt.Errorf("relay endpoint %q has no @relay part", s)
	}
	b, err := hex.DecodeString(keyHex)
	if err != nil || len(b) != KeyLen {
		return nil, fmt.Errorf("relay endpoint %q: peer key is not %d hex bytes", s, KeyLen)
	}
	ap, err := netip.ParseAddrPort(relay)
	if err != nil {
		return nil, fmt.Errorf("relay endpoint %q: relay address: %w", s, err)
	}
	e := &RelayEndpoint{Relay: ap}
	copy(e.Peer[:], b)
	return e, nil
}

// IsRelayEndpoint reports whether s is the text form of a relayed endpoint.
func IsRelayEndpoint(s string) bool { return strings.HasPrefix(s, relayEndpointPrefix) }

func (e *RelayEndpoint) ClearSrc()           {}
func (e *RelayEndpoint) SrcToString() string { return "" }
func (e *RelayEndpoint) DstToString() string { return e.String() }
func (e *RelayEndpoint) DstIP() netip.Addr   { return e.Relay.Addr() }
func (e *RelayEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// DstToBytes feeds wireguard-go's cookie MACs, which bind a cookie to the
// sender's address: the relay's address and the far peer's key together.
func (e *RelayEndpoint) DstToBytes() []byte {
	b, _ := e.Relay.MarshalBinary()
	return append(b, e.Peer[:8]...)
}

// RelayHandler is the NAT layer's side of the relay: the wire format, the
// keys and the forwarding policy live there, the Bind only moves bytes.
type RelayHandler interface {
	// Seal wraps one WireGuard datagram for ep.Peer through ep.Relay,
	// appending the result to dst[:0].
	Seal(dst, payload []byte, ep *RelayEndpoint) ([]byte, error)
	// Open handles a relay packet received from `from` (pkt starts with
	// RelayMarker). It returns a WireGuard datagram for this machine (a
	// sub-slice of pkt) and the endpoint it comes from, or ok=false when
	// the packet was consumed (forwarded, a control message) or dropped.
	Open(pkt []byte, from netip.AddrPort) (payload []byte, ep conn.Endpoint, ok bool)
}

// SetRelayHandler installs the NAT layer's relay handler; until then relay
// packets are counted as unknown and relayed endpoints cannot be sent to.
func (b *Bind) SetRelayHandler(h RelayHandler) { b.relay.Store(&h) }

func (b *Bind) relayHandler() RelayHandler {
	if p := b.relay.Load(); p != nil {
		return *p
	}
	return nil
}

// sendRelayed seals each datagram and sends it to the relay, one by one:
// a sealed full-size datagram is larger than the path MTU and leaves as
// IP fragments, which UDP segmentation offload (what the inner Bind would
// use for a batch) refuses with EMSGSIZE.
func (b *Bind) sendRelayed(bufs [][]byte, ep *RelayEndpoint) error {
	h := b.relayHandler()
	if h == nil {
		return fmt.Errorf("send to %v: no relay handler", ep)
	}
	p, _ := b.relayBufs.Get().(*[]byte)
	if p == nil {
		buf := make([]byte, 0, 1<<16)
		p = &buf
	}
	defer b.relayBufs.Put(p)
	to := &conn.StdNetEndpoint{AddrPort: ep.Relay}
	for _, buf := range bufs {
		sealed, err := h.Seal((*p)[:0], buf, ep)
		if err != nil {
			return fmt.Errorf("send to %v: %w", ep, err)
		}
		*p = sealed[:0]
		if err := b.inner.Send([][]byte{sealed}, to); err != nil {
			return err
		}
	}
	return nil
}
