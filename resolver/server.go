package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Config configures a Server.
type Config struct {
	// Index is where the zone comes from.
	Index *Index
	// Upstreams are the resolvers ("IP" or "IP:port") for names outside
	// the zone. Empty: the nameservers of ResolvConf.
	Upstreams []string
	// ResolvConf is read for upstreams when none are given; default
	// /etc/resolv.conf. A missing file means no forwarding (REFUSED).
	ResolvConf string
	// Exclude are this server's own addresses, never used as upstreams
	// (a container's resolv.conf points at this server).
	Exclude []netip.Addr
	// MaxForwards bounds forwarded queries in flight; more get SERVFAIL
	// at once. Default 256.
	MaxForwards int
	// ForwardTimeout bounds one forwarded query over all upstreams;
	// default 3 s. Each upstream gets an equal share, at least 500 ms.
	ForwardTimeout time.Duration
	// CacheSize is how many forwarded answers are cached; default 2048.
	CacheSize int
	// MaxTCPConns bounds open TCP connections; more are closed at once.
	// Default 128.
	MaxTCPConns int
	// TCPIdle closes a TCP connection with no query for this long;
	// default 10 s.
	TCPIdle time.Duration
	// Allow are the client addresses served; others get no answer at
	// all (no amplification, no open resolver even when a packet for the
	// listening address arrives on another interface). Empty: everyone.
	Allow  []netip.Prefix
	Logger *slog.Logger
}

// Server answers DNS over UDP and TCP: the zone from its Index, every
// other name through its upstreams. It serves on as many sockets and
// listeners as it is given.
type Server struct {
	idx    *Index
	fwd    *forwarder // nil: no upstreams, outside names get REFUSED
	log    *slog.Logger
	tcpSem chan struct{}
	idle   time.Duration
	allow  []netip.Prefix
	stats  Stats
}

// Stats count what the server did; read with Server.Stats.
type Stats struct {
	Queries    atomic.Uint64 // messages received
	Answered   atomic.Uint64 // answered from the zone
	Forwarded  atomic.Uint64 // sent to upstreams (cache misses)
	CacheHits  atomic.Uint64
	ServFail   atomic.Uint64 // forwards that got no answer, or found no room
	Dropped    atomic.Uint64 // not answered: responses, garbage
	Denied     atomic.Uint64 // not answered: a client outside Allow
	TCPRefused atomic.Uint64 // connections closed for want of room
}

// NewServer makes a server; it serves once given sockets.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Index == nil {
		return nil, errors.New("resolver: config has no Index")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxTCPConns <= 0 {
		cfg.MaxTCPConns = 128
	}
	if cfg.TCPIdle <= 0 {
		cfg.TCPIdle = 10 * time.Second
	}
	s := &Server{idx: cfg.Index, log: cfg.Logger, tcpSem: make(chan struct{}, cfg.MaxTCPConns), idle: cfg.TCPIdle,
		allow: cfg.Allow}
	ups := cfg.Upstreams
	if len(ups) == 0 {
		var err error
		if ups, err = readResolvConf(cfg.ResolvConf); err != nil {
			s.log.Warn("resolver: no upstreams; names outside .internal will be refused", "err", err)
		}
	}
	ups, err := normalizeUpstreams(ups, cfg.Exclude)
	if err != nil {
		return nil, err
	}
	if len(ups) > 0 {
		s.fwd = newForwarder(ups, cfg.MaxForwards, cfg.ForwardTimeout, cfg.CacheSize, &s.stats)
		s.log.Info("resolver: forwarding outside .internal", "upstreams", ups)
	}
	return s, nil
}

// Stats returns the counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Upstreams lists where names outside the zone go.
func (s *Server) Upstreams() []string {
	if s.fwd == nil {
		return nil
	}
	return s.fwd.upstreams
}

// allowed says whether the client at a is served.
func (s *Server) allowed(a netip.Addr) bool {
	if len(s.allow) == 0 {
		return true
	}
	a = a.Unmap()
	for _, p := range s.allow {
		if p.Contains(a) {
			return true
		}
	}
	s.stats.Denied.Add(1)
	return false
}

// replier sends an answer back to the client; nil means none.
type replier func([]byte)

// respond answers the message p from the client at from (the zero
// address: no client, or unknown) into out. It returns the answer and
// actReply, or actForward (p goes to the upstreams), or actDrop. The
// client's address picks its project's view (a container of a project
// sees its project's <service>.internal).
func (s *Server) respond(p, out, key []byte, tcp bool, rot *uint32, from netip.Addr) ([]byte, action) {
	s.stats.Queries.Add(1)
	z := s.idx.zone.Load()
	q, k, ok := parseQuery(p, key)
	var pk *packed
	pkt := p
	if ok {
		if pk, ok = z.lookupKey(k, q.qtype, from); !ok {
			return nil, actForward
		}
	} else {
		canon, sq, skey, resp, act := slowQuery(p, out)
		switch act {
		case actAnswer:
		case actDrop:
			s.stats.Dropped.Add(1)
			return nil, act
		default:
			return resp, act
		}
		if pk, ok = z.lookup(skey, sq.qtype, from); !ok {
			return nil, actForward
		}
		pkt, q = canon, sq
	}
	body := pk.bodies[0]
	if len(pk.bodies) > 1 {
		*rot++
		body = pk.bodies[*rot%uint32(len(pk.bodies))]
	}
	s.stats.Answered.Add(1)
	return assemble(out, pkt, &q, pk, body, q.limit(tcp), s.fwd != nil), actReply
}

// ListenUDP opens n UDP sockets on addr with SO_REUSEPORT, so the kernel
// spreads queries over n serving goroutines; UDPSockets says how many.
func ListenUDP(ctx context.Context, addr string, n int) ([]net.PacketConn, error) {
	lc := net.ListenConfig{Control: reusePort}
	var out []net.PacketConn
	for range max(n, 1) {
		c, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, fmt.Errorf("resolver: listen udp %s: %w", addr, err)
		}
		out = append(out, c)
		if addr[len(addr)-2:] == ":0" {
			// A kernel-chosen port: the next sockets must share it.
			addr = c.LocalAddr().String()
		}
	}
	return out, nil
}

// ListenTCP opens a TCP listener on addr.
func ListenTCP(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("resolver: listen tcp %s: %w", addr, err)
	}
	return ln, nil
}

// UDPSockets is how many UDP sockets to serve one address with: one per
// core but one. Each serving goroutine waits in poll(2) holding its
// thread; with every scheduler P in such a wait, Go's sysmon takes the Ps
// back after 20 µs of each wait and keeps polling every 20 µs, which on a
// loaded 2-core machine doubled the median latency at 1,000 QPS. One P
// left free keeps sysmon asleep. (Measured with bench/dns: one socket on
// 2 cores also answered more queries at saturation than two, with
// dnsperf on the same cores.)
func UDPSockets() int { return max(1, runtime.GOMAXPROCS(0)-1) }

func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	return errors.Join(err, serr)
}

// ServePacket answers queries on c until ctx ends (then it closes c) or
// c fails. One goroutine per socket: the zone path never blocks, and
// forwarded queries run apart, bounded.
func (s *Server) ServePacket(ctx context.Context, c net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if udp, ok := c.(*net.UDPConn); ok {
		return s.serveBatch(ctx, udp)
	}
	return s.serveGeneric(ctx, c)
}

// serveGeneric reads one datagram at a time: for the netstack's sockets
// (and kernel sockets where there is no recvmmsg).
func (s *Server) serveGeneric(ctx context.Context, c net.PacketConn) error {
	buf := make([]byte, maxUDP+1) // a longer datagram arrives cut: FORMERR
	out := make([]byte, 0, maxMessage)
	key := make([]byte, 0, maxKey+1)
	var rot uint32
	udp, _ := c.(*net.UDPConn)
	for {
		var n int
		var from netip.AddrPort
		var addr net.Addr
		var err error
		if udp != nil {
			n, from, err = udp.ReadFromUDPAddrPort(buf)
		} else {
			n, addr, err = c.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("resolver: read %s: %w", c.LocalAddr(), err)
		}
		if udp == nil {
			ap, ok := addrPortOf(addr)
			if !ok || !s.allowed(ap.Addr()) {
				continue
			}
			from = ap
		} else if !s.allowed(from.Addr()) {
			continue
		}
		resp, act := s.respond(buf[:n], out, key, false, &rot, from.Addr())
		switch act {
		case actReply:
			if udp != nil {
				udp.WriteToUDPAddrPort(resp, from)
			} else {
				c.WriteTo(resp, addr)
			}
		case actForward:
			s.forward(ctx, buf[:n], false, func(b []byte) {
				switch {
				case b == nil:
				case udp != nil:
					udp.WriteToUDPAddrPort(b, from)
				default:
					c.WriteTo(b, addr)
				}
			})
		}
	}
}

// forward hands the query to the forwarder, or answers REFUSED when
// there are no upstreams. reply may run on another goroutine.
func (s *Server) forward(ctx context.Context, p []byte, tcp bool, reply replier) {
	if s.fwd == nil {
		reply(refused(p))
		return
	}
	s.fwd.start(ctx, p, tcp, reply)
}

// ServeStream answers queries over TCP connections from ln until ctx
// ends (then it closes ln) or ln fails. Each connection may carry many
// queries (RFC 7766); they are answered in order.
func (s *Server) ServeStream(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("resolver: accept on %s: %w", ln.Addr(), err)
		}
		if ap, ok := addrPortOf(c.RemoteAddr()); !ok || !s.allowed(ap.Addr()) {
			c.Close()
			continue
		}
		select {
		case s.tcpSem <- struct{}{}:
		default:
			s.stats.TCPRefused.Add(1)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-s.tcpSem }()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	buf := make([]byte, 2+maxMessage)
	out := make([]byte, 2, 2+maxMessage)
	key := make([]byte, 0, maxKey+1)
	var rot uint32
	client, _ := addrPortOf(c.RemoteAddr())
	var wmu sync.Mutex // forwarded answers write from their own goroutine
	write := func(b []byte) {
		if b == nil {
			return
		}
		wmu.Lock()
		defer wmu.Unlock()
		c.SetWriteDeadline(time.Now().Add(s.idle))
		msg := make([]byte, 2+len(b))
		binary.BigEndian.PutUint16(msg, uint16(len(b)))
		copy(msg[2:], b)
		c.Write(msg)
	}
	for {
		c.SetReadDeadline(time.Now().Add(s.idle))
		if _, err := io.ReadFull(c, buf[:2]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(buf))
		if _, err := io.ReadFull(c, buf[2:2+n]); err != nil {
			return
		}
		resp, act := s.respond(buf[2:2+n], out[2:2], key, true, &rot, client.Addr())
		switch act {
		case actReply:
			write(resp)
		case actForward:
			done := make(chan struct{})
			s.forward(ctx, buf[2:2+n], true, func(b []byte) { write(b); close(done) })
			// One forward at a time per connection: the buffer is reused.
			select {
			case <-done:
			case <-ctx.Done():
				return
			}
		case actDrop:
			return // not DNS: hang up
		}
	}
}

// Query answers one question in-process, the way a client over TCP would
// get it (forwarded if outside the zone): for `uncloud dns query`.
func (s *Server) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(advertisedUDP, false)
	p, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("resolver: query %q: %w", name, err)
	}
	var rot uint32
	out := make([]byte, 0, maxMessage)
	key := make([]byte, 0, maxKey+1)
	resp, act := s.respond(p, out, key, true, &rot, netip.Addr{})
	switch act {
	case actForward:
		if s.fwd == nil {
			resp = refused(p)
		} else {
			m.Id = dns.Id()
			r := s.fwd.resolve(ctx, m)
			return r, nil
		}
	case actDrop:
		return nil, fmt.Errorf("resolver: query %q: no answer", name)
	}
	r := new(dns.Msg)
	if err := r.Unpack(resp); err != nil {
		return nil, fmt.Errorf("resolver: answer to %q: %w", name, err)
	}
	return r, nil
}

// addrPortOf reads a UDP or TCP address (the netstack's too).
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort(), true
	case *net.TCPAddr:
		return a.AddrPort(), true
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap, err == nil
}
