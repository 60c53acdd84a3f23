package rootless

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

// maxExposedConns bounds the mesh connections forwarded to the host at
// once; more are closed as they come, so a flood from the mesh does not
// become a flood of sockets on the host.
const maxExposedConns = 1024

// Exposer forwards the mesh's connections to exposed ports on the
// machine's mesh address (inside the namespace, where the kernel TUN
// holds it) to the same ports on the host's 127.0.0.1, through the
// host-side helper (hostdial.go): what the netstack's forwarder does for
// a netstack machine. A UDP port is forwarded per mesh source
// (exposeudp.go).
type Exposer struct {
	Addr netip.Addr // the machine's mesh address
	Dial func(ctx context.Context, proto string, port uint16) (net.Conn, error)
	Log  *slog.Logger

	// Tests shorten these; zero is udpFlowIdle and maxUDPFlows.
	udpIdle     time.Duration
	udpMaxFlows int

	ctx   context.Context
	mu    sync.Mutex
	ports map[uint16]*exposedPort
	udp   map[uint16]*udpPort
	conns chan struct{} // slots of maxExposedConns

	dropLog       atomic.Int64 // unix nanoseconds of the last drop logged
	dropsUnlogged atomic.Int64
}

// exposedPort is one listening port and the connections it forwards.
type exposedPort struct {
	ln     net.Listener
	cancel context.CancelFunc // ends its host dials in flight
	mu     sync.Mutex
	conns  map[net.Conn]struct{} // both ends of each forwarded connection; nil once closed
	wg     sync.WaitGroup
}

// Start makes the exposer ready; its ports close when ctx ends.
func (e *Exposer) Start(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ctx = ctx
	e.ports = map[uint16]*exposedPort{}
	e.udp = map[uint16]*udpPort{}
	e.conns = make(chan struct{}, maxExposedConns)
	context.AfterFunc(ctx, func() { e.SetExposed(nil) })
}

// SetExposed listens on the ports of expose that are new and closes
// those no longer listed, with their connections and flows. A port that
// cannot be listened on fails the change, which is undone.
func (e *Exposer) SetExposed(expose []tun.ExposedPort) error {
	wantTCP, wantUDP := map[uint16]bool{}, map[uint16]bool{}
	for _, p := range expose {
		if p.Proto == "udp" {
			wantUDP[p.Port] = true
		} else {
			wantTCP[p.Port] = true
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ports == nil {
		return fmt.Errorf("expose on the host: the forwarder is not started")
	}
	var openedTCP, openedUDP []uint16
	undo := func() {
		for _, p := range openedTCP {
			e.closePort(p)
		}
		for _, p := range openedUDP {
			e.closeUDP(p)
		}
	}
	for port := range wantTCP {
		if e.ports[port] != nil || e.ctx.Err() != nil {
			continue
		}
		addr := netip.AddrPortFrom(e.Addr, port)
		ln, err := net.Listen("tcp", addr.String())
		if err != nil {
			undo()
			return fmt.Errorf("expose %d/tcp: listen on the mesh address %v inside the rootless namespace: %w", port, addr, err)
		}
		ctx, cancel := context.WithCancel(e.ctx)
		ep := &exposedPort{ln: ln, cancel: cancel, conns: map[net.Conn]struct{}{}}
		e.ports[port] = ep
		openedTCP = append(openedTCP, port)
		ep.wg.Add(1)
		go e.accept(ctx, port, ep)
	}
	for port := range wantUDP {
		if e.udp[port] != nil || e.ctx.Err() != nil {
			continue
		}
		up, err := e.listenUDP(port)
		if err != nil {
			undo()
			return fmt.Errorf("expose %d/udp: listen on the mesh address %v inside the rootless namespace: %w", port, netip.AddrPortFrom(e.Addr, port), err)
		}
		e.udp[port] = up
		openedUDP = append(openedUDP, port)
	}
	for port := range e.ports {
		if !wantTCP[port] {
			e.closePort(port)
		}
	}
	for port := range e.udp {
		if !wantUDP[port] {
			e.closeUDP(port)
		}
	}
	return nil
}

// closeUDP stops a UDP port and its flows. Called with e.mu.
func (e *Exposer) closeUDP(port uint16) {
	e.udp[port].close()
	delete(e.udp, port)
}

// closePort stops port's listener and its connections. Called with e.mu.
func (e *Exposer) closePort(port uint16) {
	ep := e.ports[port]
	delete(e.ports, port)
	ep.ln.Close()
	ep.cancel()
	ep.mu.Lock()
	for c := range ep.conns {
		c.Close()
	}
	ep.conns = nil
	ep.mu.Unlock()
	ep.wg.Wait()
}

func (e *Exposer) log() *slog.Logger {
	if e.Log == nil {
		return slog.Default()
	}
	return e.Log
}

func (e *Exposer) accept(ctx context.Context, port uint16, ep *exposedPort) {
	defer ep.wg.Done()
	for {
		c, err := ep.ln.Accept()
		if err != nil {
			return // closed
		}
		select {
		case e.conns <- struct{}{}:
		default:
			c.Close()
			continue
		}
		ep.wg.Add(1)
		go func() {
			defer ep.wg.Done()
			defer func() { <-e.conns }()
			e.forward(ctx, port, ep, c)
		}()
	}
}

// track adds or removes c from the port's connections; adding fails once
// the port is closed (its listener's Accept fails then too).
func (ep *exposedPort) track(c net.Conn, add bool) bool {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if !add {
		delete(ep.conns, c)
		return true
	}
	if ep.conns == nil {
		return false
	}
	ep.conns[c] = struct{}{}
	return true
}

// forward dials the host's port for the mesh connection c and splices.
// A refused dial resets c, as a closed port on a kernel host would.
func (e *Exposer) forward(ctx context.Context, port uint16, ep *exposedPort, c net.Conn) {
	if !ep.track(c, true) {
		c.Close()
		return
	}
	defer ep.track(c, false)
	host, err := e.Dial(ctx, "tcp", port)
	if err != nil {
		e.log().Debug("exposed port: host dial failed", "port", port, "from", c.RemoteAddr(), "err", err)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, not FIN: the connection was never there
		}
		c.Close()
		return
	}
	if !ep.track(host, true) {
		host.Close()
		c.Close()
		return
	}
	defer ep.track(host, false)
	splice(c, host)
}

// splice copies both ways until both ended, passing each half-close on.
// Between two kernel TCP sockets io.Copy uses splice(2).
func splice(a, b net.Conn) {
	done := make(chan struct{})
	half := func(dst, src net.Conn) {
		if _, err := io.Copy(dst, src); err != nil {
			a.Close()
			b.Close()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	go func() {
		defer close(done)
		half(b, a)
	}()
	half(a, b)
	<-done
	a.Close()
	b.Close()
}

// Ports are the ports listening now ("8080", "5353/udp"), for logs and
// tests.
func (e *Exposer) Ports() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for p := range e.ports {
		out = append(out, strconv.Itoa(int(p)))
	}
	for p := range e.udp {
		out = append(out, strconv.Itoa(int(p))+"/udp")
	}
	return out
}
