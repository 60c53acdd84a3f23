package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// meshTransport is netTransport (memberlist's transport over a Network:
// host sockets, or the mesh device's netstack) with three additions:
//   - outgoing streams are dialed from the bind address, under the node's
//     context, so Close aborts dials in flight (a rejoin attempt against a
//     machine that is down would otherwise hold Close for the dial timeout);
//   - outgoing streams get a deadline and are closed on Shutdown:
//     memberlist sets none when it sends a user message, so a peer that
//     stops reading would block a sender forever;
//   - it records the largest packet written, which Stats reports.
type meshTransport struct {
	baseTransport
	// dial opens outgoing streams: host sockets from the bind address, or
	// the injected Network's.
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	ctx           context.Context
	streamTimeout time.Duration
	maxPacket     atomic.Int64

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

var _ memberlist.NodeAwareTransport = (*meshTransport)(nil)

// newMeshTransport binds bind (port 0 picks one free for both TCP and UDP)
// on host sockets, or on network when it is not nil.
func newMeshTransport(ctx context.Context, bind netip.AddrPort, network Network, streamTimeout time.Duration) (*meshTransport, error) {
	t := &meshTransport{
		ctx:           ctx,
		streamTimeout: streamTimeout,
		conns:         make(map[*trackedConn]struct{}),
	}
	if network == nil {
		network = hostNetwork{local: bind.Addr()}
	}
	nt, err := newNetTransport(ctx, network, bind)
	if err != nil {
		return nil, err
	}
	t.baseTransport, t.dial = nt, network.DialContext
	return t, nil
}

// boundAddr is the address actually bound, with the port resolved.
func (t *meshTransport) boundAddr(bind netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(bind.Addr(), uint16(t.GetAutoBindPort()))
}

func (t *meshTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *meshTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	for {
		cur := t.maxPacket.Load()
		if int64(len(b)) <= cur || t.maxPacket.CompareAndSwap(cur, int64(len(b))) {
			break
		}
	}
	return t.baseTransport.WriteToAddress(b, a)
}

func (t *meshTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *meshTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	c, err := t.dial(ctx, "tcp", a.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s (%s): %w", a.Name, a.Addr, err)
	}
	if err := c.SetDeadline(time.Now().Add(t.streamTimeout)); err != nil {
		c.Close()
		return nil, fmt.Errorf("set deadline on stream to %s: %w", a.Addr, err)
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		c.Close()
		return nil, errors.New("gossip transport is shut down")
	}
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
	return tc, nil
}

func (t *meshTransport) Shutdown() error {
	t.mu.Lock()
	t.closed = true
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		c.Conn.Close()
	}
	return t.baseTransport.Shutdown()
}

// trackedConn forgets itself when closed.
type trackedConn struct {
	net.Conn
	t    *meshTransport
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}
