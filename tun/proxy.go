package tun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// What the proxies into the mesh (SOCKS5, socks5.go; HTTP, httpproxy.go)
// share: which destinations they may reach, how names are resolved, and
// the bounds on what a client can hold.

const (
	// proxyMaxConns bounds the client connections one proxy serves at
	// once (handshakes and tunnels); more wait in the kernel's backlog.
	proxyMaxConns = 256
	// proxyDialTimeout bounds the dial through the mesh.
	proxyDialTimeout = 15 * time.Second
	// proxyTunnelIdle closes a tunnel after this long without a byte in
	// either direction, so a peer that vanished without a FIN does not
	// hold a client slot for ever. Long, because an idle SSH session is
	// a fair use.
	proxyTunnelIdle = time.Hour
	// maxNameLen is the longest DNS name (RFC 1035).
	maxNameLen = 253
)

// ErrNotMesh marks a destination a proxy into the mesh refuses: an
// address outside the mesh, or a name outside the domain it resolves.
var ErrNotMesh = errors.New("not a mesh destination")

// MeshDialer is what the proxies may reach and how: IP addresses in Mesh,
// and names that Resolve turns into mesh addresses; nothing else. A name
// outside Domain is refused without a lookup, so the proxies never ask
// the host's resolver about what a program wanted to reach.
type MeshDialer struct {
	// Mesh is the prefix of allowed destinations; zero means meshaddr.Mesh().
	Mesh netip.Prefix
	// Domain is the only domain whose names are resolved ("internal":
	// web.internal, m1.machine.internal); empty resolves any name, for a
	// Resolve that knows only the mesh anyway. It has no effect without
	// Resolve.
	Domain string
	// Resolve answers a name's addresses; nil refuses every name.
	Resolve func(ctx context.Context, name string) ([]netip.Addr, error)
	// Dial opens the connection (the device's DialContext).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

func (m *MeshDialer) mesh() netip.Prefix {
	if m.Mesh.IsValid() {
		return m.Mesh
	}
	return meshaddr.Mesh()
}

// Check refuses a host (an IP literal or a name) that is never reachable,
// without resolving it: an address outside the mesh, a name outside
// Domain. The error wraps ErrNotMesh.
func (m *MeshDialer) Check(host string) error {
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip = ip.Unmap(); !m.mesh().Contains(ip) {
			return fmt.Errorf("%v is outside the mesh %v: %w", ip, m.mesh(), ErrNotMesh)
		}
		return nil
	}
	if m.Resolve == nil {
		return fmt.Errorf("name %q: only mesh addresses (%v) are allowed here: %w", host, m.mesh(), ErrNotMesh)
	}
	if len(host) == 0 || len(host) > maxNameLen {
		return fmt.Errorf("name of %d bytes is not a DNS name: %w", len(host), ErrNotMesh)
	}
	if d := m.Domain; d != "" {
		name := strings.ToLower(host)
		if name != d && !strings.HasSuffix(name, "."+d) {
			return fmt.Errorf("name %q: only mesh addresses (%v) and *.%s names are allowed here: %w", host, m.mesh(), d, ErrNotMesh)
		}
	}
	return nil
}

// Target resolves host to the mesh address to dial: an IP literal as is,
// a name through Resolve (its first IPv4 address in the mesh).
func (m *MeshDialer) Target(ctx context.Context, host string, port uint16) (netip.AddrPort, error) {
	if err := m.Check(host); err != nil {
		return netip.AddrPort{}, err
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), port), nil
	}
	addrs, err := m.Resolve(ctx, strings.ToLower(host))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("resolve %q: %w", host, err)
	}
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() && m.mesh().Contains(a) {
			return netip.AddrPortFrom(a, port), nil
		}
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolve %q: no address", host)
	}
	return netip.AddrPort{}, fmt.Errorf("%q resolves to %v, outside the mesh %v: %w", host, addrs, m.mesh(), ErrNotMesh)
}

// DialTCP resolves and checks host, then dials it through the mesh.
func (m *MeshDialer) DialTCP(ctx context.Context, host string, port uint16) (net.Conn, error) {
	if port == 0 {
		return nil, fmt.Errorf("port 0 of %q cannot be dialed", host)
	}
	ap, err := m.Target(ctx, host, port)
	if err != nil {
		return nil, err
	}
	return m.dial(ctx, ap)
}

// dial connects to a target that Target returned.
func (m *MeshDialer) dial(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, proxyDialTimeout)
	defer cancel()
	c, err := m.Dial(ctx, "tcp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", ap, err)
	}
	return c, nil
}

// limitListener hands out at most n connections at once; Accept waits
// for one to close. (golang.org/x/net/netutil has one; these twenty lines
// spare the module a direct dependency.)
type limitListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{} // closed by Close: a full listener's Accept returns
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &slotConn{Conn: c, release: sync.OnceFunc(func() { <-l.slots })}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// slotConn gives its slot back on Close. It keeps CloseWrite, which
// splice uses to pass a half-close on.
type slotConn struct {
	net.Conn
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

func (c *slotConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// idleConns wraps the two ends of a tunnel so that a Read gives up only
// when neither direction has moved for idle: a download that sends
// nothing upstream for an hour is not idle.
func idleConns(a, b net.Conn, idle time.Duration) (net.Conn, net.Conn) {
	last := new(atomic.Int64)
	last.Store(time.Now().UnixNano())
	return &idleConn{Conn: a, idle: idle, last: last}, &idleConn{Conn: b, idle: idle, last: last}
}

type idleConn struct {
	net.Conn
	idle time.Duration
	last *atomic.Int64 // shared by both ends: the last byte either way
}

func (c *idleConn) Read(p []byte) (int, error) {
	for {
		c.Conn.SetReadDeadline(time.Now().Add(c.idle))
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.last.Store(time.Now().UnixNano())
		}
		var ne net.Error
		if n == 0 && errors.As(err, &ne) && ne.Timeout() &&
			time.Since(time.Unix(0, c.last.Load())) < c.idle {
			continue // the other direction is alive
		}
		return n, err
	}
}

func (c *idleConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
