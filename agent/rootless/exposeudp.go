package rootless

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// udpFlowIdle closes a UDP flow neither side used for this long, as
	// a NAT forgets a mapping: each flow holds a socket on the host.
	udpFlowIdle = 60 * time.Second
	// maxUDPFlows bounds the flows of one exposed UDP port; datagrams
	// from further sources are dropped until one idles out.
	maxUDPFlows = 256
	// maxDatagram bounds one forwarded datagram (UDP's own limit is just
	// under it); longer ones arrive truncated and are dropped.
	maxDatagram = 64 << 10
	// maxPending bounds the bytes a flow queues while its host socket is
	// being asked for.
	maxPending = maxDatagram
	// dropLogEvery rate-limits the debug log of dropped datagrams.
	dropLogEvery = 10 * time.Second
)

// udpPort is one exposed UDP port: a socket on the mesh address inside
// the namespace and, per mesh source address:port (a flow), a socket the
// helper connect()ed to the host's 127.0.0.1:port. A flow's replies go
// back from the port's socket to the flow's source.
type udpPort struct {
	port   uint16
	pc     *net.UDPConn
	ctx    context.Context
	cancel context.CancelFunc // ends its host dials in flight
	idle   time.Duration
	max    int

	mu    sync.Mutex
	flows map[netip.AddrPort]*udpFlow // nil once closed
	wg    sync.WaitGroup
}

// udpFlow is one mesh source's conversation with the host's port.
type udpFlow struct {
	src  netip.AddrPort
	last atomic.Int64 // unix nanoseconds of the last datagram either way

	mu      sync.Mutex
	host    net.Conn // nil while being asked for
	closed  bool
	pending [][]byte
	queued  int
}

func (f *udpFlow) touch() { f.last.Store(time.Now().UnixNano()) }

// close closes the flow's host socket (now, or as soon as it comes).
func (f *udpFlow) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.pending = nil
	if f.host != nil {
		f.host.Close()
	}
}

// listenUDP opens port on the exposer's mesh address and serves it.
func (e *Exposer) listenUDP(port uint16) (*udpPort, error) {
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(e.Addr, port)))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(e.ctx)
	p := &udpPort{port: port, pc: pc, ctx: ctx, cancel: cancel, idle: e.udpIdle, max: e.udpMaxFlows,
		flows: map[netip.AddrPort]*udpFlow{}}
	if p.idle <= 0 {
		p.idle = udpFlowIdle
	}
	if p.max <= 0 {
		p.max = maxUDPFlows
	}
	p.wg.Add(1)
	go e.serveUDP(p)
	return p, nil
}

// close stops the port and all its flows.
func (p *udpPort) close() {
	p.pc.Close()
	p.cancel()
	p.mu.Lock()
	for _, f := range p.flows {
		f.close()
	}
	p.flows = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// flowCount is the number of live flows, for tests.
func (p *udpPort) flowCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.flows)
}

// serveUDP reads the mesh's datagrams and hands each to its flow.
func (e *Exposer) serveUDP(p *udpPort) {
	defer p.wg.Done()
	buf := make([]byte, maxDatagram+1)
	for {
		n, src, err := p.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. an ICMP error for an earlier reply
		}
		if n > maxDatagram {
			e.dropped("longer than the bound", p.port, src, nil)
			continue
		}
		f, isNew := p.flow(src)
		if f == nil {
			e.dropped("too many flows on the port", p.port, src, nil)
			continue
		}
		f.touch()
		if isNew {
			p.wg.Add(1)
			go e.runFlow(p, f)
		}
		f.mu.Lock()
		switch {
		case f.closed:
		case f.host != nil:
			f.host.Write(buf[:n]) // a connected UDP send: a failure is a lost datagram
		case f.queued+n <= maxPending:
			f.pending = append(f.pending, append([]byte(nil), buf[:n]...))
			f.queued += n
		}
		f.mu.Unlock()
	}
}

// flow finds or makes src's flow; nil when the port is closed or full.
func (p *udpPort) flow(src netip.AddrPort) (*udpFlow, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.flows == nil {
		return nil, false
	}
	if f := p.flows[src]; f != nil {
		return f, false
	}
	if len(p.flows) >= p.max {
		return nil, false
	}
	f := &udpFlow{src: src}
	p.flows[src] = f
	return f, true
}

// forget removes f from the port's flows and closes it.
func (p *udpPort) forget(f *udpFlow) {
	p.mu.Lock()
	if p.flows != nil && p.flows[f.src] == f {
		delete(p.flows, f.src)
	}
	p.mu.Unlock()
	f.close()
}

// runFlow asks the helper for the flow's host socket, sends what was
// queued meanwhile, and carries the host's replies back until the flow
// idles out or the port closes. A refused ask drops the queued
// datagrams; the source's next one asks again.
func (e *Exposer) runFlow(p *udpPort, f *udpFlow) {
	defer p.wg.Done()
	defer p.forget(f)
	ctx, cancel := context.WithTimeout(p.ctx, hostDialTimeout)
	host, err := e.Dial(ctx, "udp", p.port)
	cancel()
	if err != nil {
		e.dropped("the host-side helper gave no socket", p.port, f.src, err)
		return
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		host.Close()
		return
	}
	f.host = host
	for _, b := range f.pending {
		host.Write(b)
	}
	f.pending, f.queued = nil, 0
	f.mu.Unlock()

	buf := make([]byte, maxDatagram)
	for {
		deadline := time.Unix(0, f.last.Load()).Add(p.idle)
		if !time.Now().Before(deadline) {
			return // idle
		}
		host.SetReadDeadline(deadline)
		n, err := host.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.ECONNREFUSED) {
				continue // the loop checks idleness; refused: nothing listened, as on a host
			}
			return // closed
		}
		f.touch()
		p.pc.WriteToUDPAddrPort(buf[:n], f.src)
	}
}

// dropped logs a dropped datagram at debug level, at most once per
// dropLogEvery per exposer, with how many went unlogged.
func (e *Exposer) dropped(why string, port uint16, src netip.AddrPort, err error) {
	now := time.Now().UnixNano()
	last := e.dropLog.Load()
	if now-last < int64(dropLogEvery) || !e.dropLog.CompareAndSwap(last, now) {
		e.dropsUnlogged.Add(1)
		return
	}
	attrs := []any{"port", port, "from", src, "unlogged since", e.dropsUnlogged.Swap(0)}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	e.log().Log(context.Background(), slog.LevelDebug, "exposed UDP port: datagram dropped: "+why, attrs...)
}
