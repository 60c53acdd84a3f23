package gossip

import (
	"context"
	"net"
	"net/netip"
)

// hostNetwork is the Network of ordinary host sockets, with outgoing
// streams dialed from the bind address.
//
// Gossip used memberlist's own NetTransport here, which allocates a fresh
// 64 KB buffer for every UDP packet it receives: with 20 machines that
// was 80 % of an idle agent's garbage (measured with the allocs profile).
// netTransport reads into one buffer and copies each packet at its size.
type hostNetwork struct {
	local netip.Addr // dial from here unless unspecified
}

// gossipSocketBuffer is the receive buffer asked for the packet socket,
// as memberlist does, so a burst of gossip is not dropped by the kernel.
const gossipSocketBuffer = 2 << 20

func (h hostNetwork) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, network, address)
}

func (h hostNetwork) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if u, ok := pc.(*net.UDPConn); ok {
		u.SetReadBuffer(gossipSocketBuffer) // best effort: the kernel may cap it
	}
	return pc, nil
}

func (h hostNetwork) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	if h.local.IsValid() && !h.local.IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: h.local.AsSlice()}
	}
	return d.DialContext(ctx, network, address)
}
