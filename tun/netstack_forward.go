package tun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const (
	// forwardMaxInFlight bounds TCP handshakes waiting for their host
	// dial; further SYNs are dropped and the peer retries. It keeps a SYN
	// flood from the mesh from becoming a flood of goroutines and sockets.
	forwardMaxInFlight = 64
	// forwardDialTimeout bounds one dial to 127.0.0.1. A local dial
	// answers at once unless the host is overloaded.
	forwardDialTimeout = 5 * time.Second
	// forwardMaxUDPFlows bounds UDP flows, each of which holds a host
	// socket until it is idle for forwardUDPIdle.
	forwardMaxUDPFlows = 512
	forwardUDPIdle     = 60 * time.Second
)

// forwarder forwards inbound mesh connections to exposed host ports on
// 127.0.0.1 and refuses every other one. The stack consults it only for
// packets that no endpoint inside the stack (the agent's own listeners)
// took, so those always win.
type forwarder struct {
	logger *slog.Logger
	addr   tcpip.Address
	dialer net.Dialer

	// portsMu guards the exposed ports and the flows forwarded to them,
	// which setExposed changes at runtime.
	portsMu  sync.Mutex
	tcpPorts map[uint16]bool
	udpPorts map[uint16]bool
	flows    map[ExposedPort]map[*flow]struct{}

	tcp *tcp.Forwarder
	udp *udp.Forwarder

	ctx      context.Context
	cancel   context.CancelFunc
	mu       sync.Mutex // guards closed and wg.Add against close
	closed   bool
	wg       sync.WaitGroup
	udpFlows atomic.Int32
	bufs     bufPool
}

// flow is one forwarded connection (TCP) or datagram flow (UDP): both of
// its sockets, closed together when its port stops being exposed.
type flow struct{ mesh, host io.Closer }

func (fl *flow) close() {
	fl.mesh.Close()
	fl.host.Close()
}

func newForwarder(s *stack.Stack, addr tcpip.Address, expose []ExposedPort, logger *slog.Logger) (*forwarder, error) {
	f := &forwarder{
		logger: logger,
		addr:   addr,
		flows:  make(map[ExposedPort]map[*flow]struct{}),
	}
	if _, err := f.setExposed(expose); err != nil {
		return nil, err
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	// rcvWnd 0 keeps the stack's (tuned) default receive buffer.
	f.tcp = tcp.NewForwarder(s, 0, forwardMaxInFlight, f.handleTCP)
	f.udp = udp.NewForwarder(s, f.handleUDP)
	return f, nil
}

// portSets builds the lookup sets of a list of exposed ports.
func portSets(expose []ExposedPort) (tcpPorts, udpPorts map[uint16]bool, err error) {
	tcpPorts, udpPorts = make(map[uint16]bool), make(map[uint16]bool)
	for _, p := range expose {
		if p.Port == 0 {
			return nil, nil, fmt.Errorf("netstack: exposed port %v: port 0", p)
		}
		switch p.Proto {
		case "tcp", "":
			tcpPorts[p.Port] = true
		case "udp":
			udpPorts[p.Port] = true
		default:
			return nil, nil, fmt.Errorf("netstack: exposed port %v: protocol %q is neither tcp nor udp", p, p.Proto)
		}
	}
	return tcpPorts, udpPorts, nil
}

// setExposed replaces the exposed ports. A port no longer exposed is
// closed at once: new connections to it are refused, and the flows
// already forwarded to it are closed (both sockets), as a port closed on
// a kernel host would end them. It returns how many flows it closed.
func (f *forwarder) setExposed(expose []ExposedPort) (int, error) {
	tcpPorts, udpPorts, err := portSets(expose)
	if err != nil {
		return 0, err
	}
	f.portsMu.Lock()
	f.tcpPorts, f.udpPorts = tcpPorts, udpPorts
	var doomed []*flow
	for p, set := range f.flows {
		if f.exposedLocked(p) {
			continue
		}
		for fl := range set {
			doomed = append(doomed, fl)
		}
		delete(f.flows, p)
	}
	f.portsMu.Unlock()
	for _, fl := range doomed {
		fl.close()
	}
	return len(doomed), nil
}

func (f *forwarder) exposedLocked(p ExposedPort) bool {
	if p.Proto == "udp" {
		return f.udpPorts[p.Port]
	}
	return f.tcpPorts[p.Port]
}

func (f *forwarder) exposed(p ExposedPort) bool {
	f.portsMu.Lock()
	defer f.portsMu.Unlock()
	return f.exposedLocked(p)
}

// addFlow records a flow of port p, unless p stopped being exposed while
// the flow was being set up: then it is closed and addFlow says false.
func (f *forwarder) addFlow(p ExposedPort, fl *flow) bool {
	f.portsMu.Lock()
	ok := f.exposedLocked(p)
	if ok {
		set := f.flows[p]
		if set == nil {
			set = make(map[*flow]struct{})
			f.flows[p] = set
		}
		set[fl] = struct{}{}
	}
	f.portsMu.Unlock()
	if !ok {
		fl.close()
	}
	return ok
}

func (f *forwarder) removeFlow(p ExposedPort, fl *flow) {
	f.portsMu.Lock()
	defer f.portsMu.Unlock()
	if set := f.flows[p]; set != nil {
		delete(set, fl)
		if len(set) == 0 {
			delete(f.flows, p)
		}
	}
}

// track registers a connection goroutine unless the forwarder is closing.
func (f *forwarder) track() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.wg.Add(1)
	return true
}

func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
}

func (f *forwarder) wait() { f.wg.Wait() }

// handleTCP runs in its own goroutine for each new inbound connection (the
// SYN). The handshake completes only after the host accepted our dial, so
// a port with nothing behind it is refused as it would be on a kernel.
func (f *forwarder) handleTCP(req *tcp.ForwarderRequest) {
	id := req.ID()
	port := ExposedPort{Port: id.LocalPort, Proto: "tcp"}
	if id.LocalAddress != f.addr || !f.exposed(port) {
		req.Complete(true)
		return
	}
	if !f.track() {
		req.Complete(true)
		return
	}
	defer f.wg.Done()

	target := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), id.LocalPort).String()
	ctx, cancel := context.WithTimeout(f.ctx, forwardDialTimeout)
	host, err := f.dialer.DialContext(ctx, "tcp4", target)
	cancel()
	if err != nil {
		f.logger.Debug("forward tcp: dial host failed, refusing", "from", id.RemoteAddress, "port", id.LocalPort, "err", err)
		req.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, tcpErr := req.CreateEndpoint(&wq)
	if tcpErr != nil {
		// The peer gave up or sent garbage; CreateEndpoint already
		// answered it.
		req.Complete(true)
		host.Close()
		return
	}
	req.Complete(false)
	mesh := gonet.NewTCPConn(&wq, ep)
	fl := &flow{mesh: mesh, host: host}
	if !f.addFlow(port, fl) {
		return
	}
	defer f.removeFlow(port, fl)
	hostTCP, ok := host.(*net.TCPConn)
	if !ok {
		splice(f.ctx, mesh, host, &f.bufs)
		return
	}
	// The host-to-mesh direction reads the host socket straight into the
	// endpoint's send buffer (copyHostToMesh), saving a copy.
	spliceWith(f.ctx, mesh, host,
		func() { copyHostToMesh(mesh, ep, &wq, hostTCP) },
		func() { copyHalf(host, mesh, &f.bufs) })
}

// handleUDP runs on the stack's receive path for the first datagram of a
// flow to a port nobody inside the stack listens on, so it must not block.
// Datagrams to ports that are not exposed are dropped without an answer.
func (f *forwarder) handleUDP(req *udp.ForwarderRequest) {
	id := req.ID()
	port := ExposedPort{Port: id.LocalPort, Proto: "udp"}
	if id.LocalAddress != f.addr || !f.exposed(port) {
		return
	}
	if f.udpFlows.Add(1) > forwardMaxUDPFlows {
		f.udpFlows.Add(-1)
		f.logger.Debug("forward udp: too many flows, dropping", "from", id.RemoteAddress, "port", id.LocalPort)
		return
	}
	if !f.track() {
		f.udpFlows.Add(-1)
		return
	}
	host, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), id.LocalPort)))
	if err != nil {
		f.logger.Debug("forward udp: host socket failed", "port", id.LocalPort, "err", err)
		f.udpFlows.Add(-1)
		f.wg.Done()
		return
	}
	var wq waiter.Queue
	ep, tcpErr := req.CreateEndpoint(&wq)
	if tcpErr != nil {
		host.Close()
		f.udpFlows.Add(-1)
		f.wg.Done()
		return
	}
	mesh := gonet.NewUDPConn(&wq, ep)
	fl := &flow{mesh: mesh, host: host}
	if !f.addFlow(port, fl) {
		f.udpFlows.Add(-1)
		f.wg.Done()
		return
	}
	go func() {
		defer f.wg.Done()
		defer f.udpFlows.Add(-1)
		defer f.removeFlow(port, fl)
		f.relayUDP(mesh, host)
	}()
}

// relayUDP copies datagrams both ways until the flow is idle in both
// directions for forwardUDPIdle or the forwarder closes.
func (f *forwarder) relayUDP(mesh *gonet.UDPConn, host *net.UDPConn) {
	stop := context.AfterFunc(f.ctx, func() {
		mesh.Close()
		host.Close()
	})
	defer stop()
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	relay := func(dst, src net.Conn) {
		buf := make([]byte, 64<<10)
		for {
			src.SetReadDeadline(time.Now().Add(forwardUDPIdle))
			n, err := src.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() &&
					time.Since(time.Unix(0, last.Load())) < forwardUDPIdle {
					continue // the other direction is still active
				}
				mesh.Close()
				host.Close()
				return
			}
			last.Store(time.Now().UnixNano())
			// A failed write is one lost datagram, as on any UDP path.
			dst.Write(buf[:n])
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		relay(host, mesh)
	}()
	relay(mesh, host)
	<-done
}
