package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Network is where gossip's sockets live when they cannot be host sockets:
// on a machine in userspace (netstack) mode the mesh address exists only
// inside the agent's own TCP/IP stack. The mesh device satisfies it.
type Network interface {
	Listen(ctx context.Context, network, address string) (net.Listener, error)
	ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error)
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// baseTransport is what meshTransport builds on: memberlist's own
// NetTransport on host sockets, or netTransport on a Network.
type baseTransport interface {
	memberlist.NodeAwareTransport
	GetAutoBindPort() int
}

// netTransport is memberlist's transport over a Network: one UDP socket
// for packets, one listener for streams, both on the bind address.
type netTransport struct {
	network  Network
	addr     netip.AddrPort
	pc       net.PacketConn
	ln       net.Listener
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ baseTransport = (*netTransport)(nil)

func newNetTransport(ctx context.Context, network Network, bind netip.AddrPort) (*netTransport, error) {
	ctx, cancel := context.WithCancel(ctx)
	pc, ln, bound, err := listenBoth(ctx, network, bind)
	if err != nil {
		cancel()
		return nil, err
	}
	t := &netTransport{network: network, addr: bound, pc: pc, ln: ln,
		packetCh: make(chan *memberlist.Packet), streamCh: make(chan net.Conn),
		ctx: ctx, cancel: cancel}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t, nil
}

// listenBoth opens the packet socket and the stream listener on one port.
// With port 0 the stream listener picks a free port first and the packet
// socket must get the same number, which another process may hold: it
// retries a few times.
func listenBoth(ctx context.Context, network Network, bind netip.AddrPort) (net.PacketConn, net.Listener, netip.AddrPort, error) {
	tries := 1
	if bind.Port() == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var ln net.Listener
		ln, err = network.Listen(ctx, "tcp", bind.String())
		if err != nil {
			return nil, nil, bind, fmt.Errorf("listen for gossip streams on %s: %w", bind, err)
		}
		bound := bind
		if bind.Port() == 0 {
			ap, perr := netip.ParseAddrPort(ln.Addr().String())
			if perr != nil {
				ln.Close()
				return nil, nil, bind, fmt.Errorf("gossip stream listener address %q: %w", ln.Addr(), perr)
			}
			bound = netip.AddrPortFrom(bind.Addr(), ap.Port())
		}
		var pc net.PacketConn
		pc, err = network.ListenPacket(ctx, "udp", bound.String())
		if err == nil {
			return pc, ln, bound, nil
		}
		ln.Close()
		err = fmt.Errorf("listen for gossip packets on %s: %w", bound, err)
	}
	return nil, nil, bind, err
}

func (t *netTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := t.pc.ReadFrom(buf)
		if err != nil {
			return // closed by Shutdown
		}
		if n < 1 {
			continue
		}
		p := &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: from, Timestamp: time.Now()}
		select {
		case t.packetCh <- p:
		case <-t.ctx.Done():
			return
		}
	}
}

func (t *netTransport) acceptStreams() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return
		}
		select {
		case t.streamCh <- c:
		case <-t.ctx.Done():
			c.Close()
			return
		}
	}
}

func (t *netTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		parsed := net.ParseIP(ip)
		if parsed == nil {
			return nil, 0, fmt.Errorf("advertise address %q is not an IP", ip)
		}
		return parsed, port, nil
	}
	return net.IP(t.addr.Addr().AsSlice()), int(t.addr.Port()), nil
}

func (t *netTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *netTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	to, err := netip.ParseAddrPort(a.Addr)
	if err != nil {
		return time.Time{}, fmt.Errorf("gossip packet to %q: %w", a.Addr, err)
	}
	if _, err := t.pc.WriteTo(b, net.UDPAddrFromAddrPort(to)); err != nil {
		return time.Time{}, fmt.Errorf("gossip packet to %s: %w", to, err)
	}
	return time.Now(), nil
}

func (t *netTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *netTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *netTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	return t.network.DialContext(ctx, "tcp", a.Addr)
}

func (t *netTransport) StreamCh() <-chan net.Conn { return t.streamCh }

func (t *netTransport) GetAutoBindPort() int { return int(t.addr.Port()) }

func (t *netTransport) Shutdown() error {
	t.cancel()
	err := errors.Join(t.pc.Close(), t.ln.Close())
	t.wg.Wait()
	return err
}
