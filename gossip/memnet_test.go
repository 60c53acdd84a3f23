package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// memNet is an in-memory Network: packet sockets are channels, streams
// are net.Pipe pairs. Everything in it is channels, mutexes and timers,
// so nodes on it can run inside a testing/synctest bubble, where
// memberlist's probe, gossip, push/pull and suspicion timers run on the
// bubble's virtual clock. Loopback sockets cannot: a goroutine reading a
// real socket is never "durably blocked", so virtual time would not move.
type memNet struct {
	mu   sync.Mutex
	pcs  map[netip.AddrPort]*memPacketConn
	lns  map[netip.AddrPort]*memListener
	port uint16 // the next port handed out for port 0
}

func newMemNet() *memNet {
	return &memNet{pcs: map[netip.AddrPort]*memPacketConn{}, lns: map[netip.AddrPort]*memListener{}, port: 40000}
}

var _ Network = (*memNet)(nil)

func (m *memNet) bind(address string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return ap, err
	}
	if ap.Port() == 0 {
		m.port++
		ap = netip.AddrPortFrom(ap.Addr(), m.port)
	}
	return ap, nil
}

func (m *memNet) Listen(_ context.Context, network, address string) (net.Listener, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ap, err := m.bind(address)
	if err != nil {
		return nil, err
	}
	if m.lns[ap] != nil {
		return nil, fmt.Errorf("memnet: %s %s: address in use", network, ap)
	}
	ln := &memListener{net: m, addr: ap, accept: make(chan net.Conn), done: make(chan struct{})}
	m.lns[ap] = ln
	return ln, nil
}

func (m *memNet) ListenPacket(_ context.Context, network, address string) (net.PacketConn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ap, err := m.bind(address)
	if err != nil {
		return nil, err
	}
	if m.pcs[ap] != nil {
		return nil, fmt.Errorf("memnet: %s %s: address in use", network, ap)
	}
	pc := &memPacketConn{net: m, addr: ap, in: make(chan memPacket, 1024), done: make(chan struct{})}
	m.pcs[ap] = pc
	return pc, nil
}

// DialContext connects to a listener: a net.Pipe whose far end the
// listener accepts. Nobody listening is a refusal, as on loopback.
func (m *memNet) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	ln := m.lns[ap]
	m.mu.Unlock()
	refused := fmt.Errorf("memnet: dial %s %s: connection refused", network, ap)
	if ln == nil {
		return nil, refused
	}
	near, far := net.Pipe()
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	remote := net.TCPAddrFromAddrPort(ap)
	select {
	case ln.accept <- memConn{Conn: far, local: remote, remote: local}:
		return memConn{Conn: near, local: local, remote: remote}, nil
	case <-ln.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	near.Close()
	far.Close()
	if err != nil {
		return nil, err
	}
	return nil, refused
}

// memConn is a net.Pipe end with TCP addresses.
type memConn struct {
	net.Conn
	local, remote net.Addr
}

func (c memConn) LocalAddr() net.Addr  { return c.local }
func (c memConn) RemoteAddr() net.Addr { return c.remote }

type memListener struct {
	net    *memNet
	addr   netip.AddrPort
	accept chan net.Conn
	done   chan struct{}
	once   sync.Once
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.once.Do(func() {
		l.net.mu.Lock()
		delete(l.net.lns, l.addr)
		l.net.mu.Unlock()
		close(l.done)
	})
	return nil
}

func (l *memListener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.addr) }

type memPacket struct {
	from netip.AddrPort
	data []byte
}

type memPacketConn struct {
	net  *memNet
	addr netip.AddrPort
	in   chan memPacket
	done chan struct{}
	once sync.Once
}

func (c *memPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p.data), net.UDPAddrFromAddrPort(p.from), nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

// WriteTo delivers at once or drops, like UDP: to nobody, or to a full
// receive queue.
func (c *memPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, errors.New("memnet: not a UDP address")
	}
	to := ua.AddrPort()
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	c.net.mu.Lock()
	dst := c.net.pcs[to]
	c.net.mu.Unlock()
	if dst != nil {
		select {
		case dst.in <- memPacket{from: c.addr, data: append([]byte(nil), b...)}:
		default:
		}
	}
	return len(b), nil
}

func (c *memPacketConn) Close() error {
	c.once.Do(func() {
		c.net.mu.Lock()
		delete(c.net.pcs, c.addr)
		c.net.mu.Unlock()
		close(c.done)
	})
	return nil
}

func (c *memPacketConn) LocalAddr() net.Addr              { return net.UDPAddrFromAddrPort(c.addr) }
func (c *memPacketConn) SetDeadline(time.Time) error      { return nil }
func (c *memPacketConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memPacketConn) SetWriteDeadline(time.Time) error { return nil }

// inMemory runs body in a synctest bubble; mutate, passed to
// startCluster, puts each node on one memNet created in the bubble.
func inMemory(t *testing.T, body func(t *testing.T, onMemNet func(i int, c *Config))) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		// Registered first, so it runs after every node's Close: a
		// probe memberlist had in flight at Shutdown ends on its own
		// timer (on loopback TestMain waits for such goroutines). The
		// bubble's clock stops with the test's goroutine, so let
		// virtual time pass for them first; it costs nothing.
		t.Cleanup(func() { time.Sleep(time.Minute) })
		mn := newMemNet()
		body(t, func(i int, c *Config) {
			c.Network = mn
			c.BindAddr = netip.AddrPortFrom(c.BindAddr.Addr(), 7946)
		})
	})
}
