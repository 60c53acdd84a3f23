package ingress

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// fastServer accepts one listener's connections and proxies HTTP/1.1
// requests of the common shape itself (fastConn), without net/http: on
// this 2-core machine net/http's per-request work (header maps, the
// response writer, ReverseProxy's header copies, the server's background
// read) was half of the ingress's CPU outside system calls. A connection
// whose next request is anything else (HTTP/2, an upgrade, Expect, a
// chunked upload, an ACME challenge, a redirect or 404, an unusual or
// oversized head) is handed over at that request's first byte to srv,
// the net/http server that served every request before, and stays there.
type fastServer struct {
	in      *Ingress
	ln      net.Listener
	tc      *tls.Config // nil: plain HTTP
	handoff *handoffListener
	srv     *http.Server
	// ev, when not nil, serves plain HTTP connections on epoll loops
	// (evloop_linux.go); those it cannot serve come back here.
	ev *evGroup

	mu      sync.Mutex
	conns   map[*fastConn]struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
}

func newFastServer(in *Ingress, ln net.Listener, tc *tls.Config, srv *http.Server) *fastServer {
	s := &fastServer{in: in, ln: ln, srv: srv, conns: map[*fastConn]struct{}{},
		handoff: &handoffListener{addr: ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}}
	if tc != nil {
		// The handshake happens here, so ALPN must offer what net/http's
		// ServeTLS would: h2 connections are handed over right after it.
		s.tc = tc.Clone()
		for _, p := range []string{"http/1.1", "h2"} {
			if !slices.Contains(s.tc.NextProtos, p) {
				s.tc.NextProtos = append([]string{p}, s.tc.NextProtos...)
			}
		}
		srv.TLSConfig = s.tc.Clone()
		// A TLS connection handed over after a request was read arrives
		// wrapped (prefixConn), which net/http does not see as TLS.
		srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*prefixConn); ok {
				if t, ok := pc.Conn.(*tls.Conn); ok {
					st := t.ConnectionState()
					return context.WithValue(ctx, tlsStateKey{}, &st)
				}
			}
			return ctx
		}
		h := srv.Handler
		srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil {
				r.TLS, _ = r.Context().Value(tlsStateKey{}).(*tls.ConnectionState)
			}
			h.ServeHTTP(w, r)
		})
	}
	cfg := &in.cfg
	if tc == nil && cfg.Dial == nil && cfg.AccessLog == nil && !cfg.NoEventLoop {
		s.ev = newEvGroup(s)
	}
	return s
}

type tlsStateKey struct{}

// serve runs net/http on the handed-over connections and accepts until
// the listener closes.
func (s *fastServer) serve() error {
	go s.srv.Serve(s.handoff)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		if s.closing.Load() {
			c.Close()
			continue
		}
		if s.ev != nil && s.ev.adopt(c) {
			continue
		}
		s.start(&fastConn{s: s, raw: c}, false)
	}
}

// start runs fc on its own goroutine. A connection handed over from an
// event loop is taken even while closing: it carries a request to
// finish.
func (s *fastServer) start(fc *fastConn, handedOver bool) {
	s.mu.Lock()
	if s.closing.Load() && !handedOver {
		s.mu.Unlock()
		fc.raw.Close()
		return
	}
	s.conns[fc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go fc.run()
}

func (s *fastServer) forget(c *fastConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// shutdown stops accepting, closes idle connections at once and lets
// those in a request finish it until ctx ends; then net/http's share.
func (s *fastServer) shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.ln.Close()
	if s.ev != nil {
		s.ev.stop(false)
	}
	s.mu.Lock()
	for c := range s.conns {
		if c.idle.Load() {
			c.conn.SetReadDeadline(time.Unix(1, 0))
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if s.ev != nil {
			s.ev.stop(true)
		}
		s.mu.Lock()
		for c := range s.conns {
			c.raw.Close()
		}
		s.mu.Unlock()
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	return err
}

// handoffListener gives net/http the connections the fast path passes on.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

func (l *handoffListener) give(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

// prefixConn returns bytes the fast path read (the start of the request
// it passed on) before the connection's own.
type prefixConn struct {
	net.Conn
	pending []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// fastConn is one client connection on the fast path. Its buffers are
// reused by every request on it.
type fastConn struct {
	s    *fastServer
	raw  net.Conn
	conn net.Conn // raw, or the TLS connection over it
	buf  []byte   // request head (and body start); buf[:n] is unread input
	n    int
	bw   *bufio.Writer
	idle atomic.Bool // waiting for a request: shutdown may cut it

	clientIP string
	https    bool
	rdl      time.Time // the read deadline last set
	head     reqHead
	resp     respHead // kept here: its token slice points into itself
}

func (c *fastConn) run() {
	defer c.s.forget(c)
	cfg := &c.s.in.cfg
	c.conn = c.raw
	if c.s.tc != nil {
		// The TLS listener records each connection's start (alpn.go).
		rc, ok := c.raw.(*recordingConn)
		if !ok {
			rc = &recordingConn{Conn: c.raw, recording: true}
		}
		t := tls.Server(rc, c.s.tc)
		c.raw.SetDeadline(time.Now().Add(cfg.ReadHeaderTimeout))
		if err := t.HandshakeContext(context.Background()); err != nil {
			var re tls.RecordHeaderError
			if errors.As(err, &re) && re.Conn != nil && tlsRecordHeaderLooksLikeHTTP(re.RecordHeader) {
				re.Conn.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"))
			}
			rc.Close() // a no-op once handed to the issuer
			return
		}
		c.raw.SetDeadline(time.Time{})
		c.conn, c.https = t, true
		if t.ConnectionState().NegotiatedProtocol == "h2" {
			c.s.handoff.give(t)
			return
		}
	}
	if ap, ok := c.raw.RemoteAddr().(*net.TCPAddr); ok {
		c.clientIP = ap.IP.String()
	} else if host, _, err := net.SplitHostPort(c.raw.RemoteAddr().String()); err == nil {
		c.clientIP = host
	}
	if c.buf == nil {
		c.buf = make([]byte, fastHeadBuf)
	}
	c.bw = bufio.NewWriterSize(c.conn, 8<<10)
	for {
		switch res, why := c.readHead(); res {
		case parseOK:
		case parseFallback:
			c.handOver()
			return
		case parseBad:
			c.s.in.log.Debug("ingress: bad request", "remote", c.clientIP, "reason", why)
			c.bw.WriteString("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 16\r\n\r\n400 bad request\n")
			c.bw.Flush()
			c.conn.Close()
			return
		default: // closed or timed out
			c.conn.Close()
			return
		}
		rt := c.route()
		if rt == nil {
			c.handOver()
			return
		}
		if !c.proxy(rt) || c.s.closing.Load() {
			c.conn.Close()
			return
		}
	}
}

// parseClosed: the connection ended or timed out before a whole head.
const parseClosed parseResult = -1

// readHead reads until buf holds a whole request head.
func (c *fastConn) readHead() (parseResult, string) {
	cfg := &c.s.in.cfg
	headDeadline := false
	for {
		if c.n > 0 {
			res, why := parseHead(c.buf[:c.n], &c.head)
			if res != parseNeedMore {
				return res, why
			}
			if c.n == len(c.buf) {
				return parseFallback, "head larger than the fast path's buffer"
			}
		}
		if c.n == 0 {
			c.setReadDeadline(cfg.IdleTimeout)
			c.idle.Store(true)
			if c.s.closing.Load() {
				return parseClosed, ""
			}
		} else if !headDeadline {
			// A head begun: the slow-loris bound, set once from its
			// first byte (moving it with each byte would let a client
			// dribble forever).
			c.rdl = time.Now().Add(cfg.ReadHeaderTimeout)
			c.conn.SetReadDeadline(c.rdl)
			headDeadline = true
		}
		k, err := c.conn.Read(c.buf[c.n:])
		c.idle.Store(false)
		c.n += k
		if err != nil && k == 0 {
			return parseClosed, ""
		}
	}
}

// setReadDeadline moves the read deadline to now+d unless it is there
// within a second already: one deadline per request costs a timer
// update, and keep-alive connections make many requests a second.
func (c *fastConn) setReadDeadline(d time.Duration) {
	want := time.Now().Add(d)
	if diff := want.Sub(c.rdl); diff < time.Second && diff > -time.Second {
		return
	}
	c.rdl = want
	c.conn.SetReadDeadline(want)
}

// route finds the route of a parsed request that the fast path serves,
// or nil for net/http.
func (c *fastConn) route() *Route { return routeFor(c.s.in, &c.head, c.https) }

// routeFor is route for either path: the goroutine's and the event
// loop's serve the same requests.
func routeFor(in *Ingress, h *reqHead, https bool) *Route {
	path := h.path()
	for _, ch := range path {
		if ch == '%' {
			return nil // net/http decodes the path the route is matched on
		}
	}
	if !https && len(path) >= len(acmeChallengePrefix) && string(path[:len(acmeChallengePrefix)]) == acmeChallengePrefix {
		return nil
	}
	// The strings live only for the lookup, which keeps none of them.
	rt := in.table.Load().lookup(bytesString(h.host), bytesString(path))
	if rt == nil || rt.handler == nil || (!https && rt.HTTPS) || h.contentLength > rt.handler.maxBody {
		return nil // 404, redirect, 413: net/http's
	}
	return rt
}

// handOver passes the connection, with what was read of its next
// request, to net/http.
func (c *fastConn) handOver() {
	c.conn.SetReadDeadline(time.Time{})
	var conn net.Conn = c.conn
	if c.n > 0 {
		conn = &prefixConn{Conn: c.conn, pending: slices.Clone(c.buf[:c.n])}
	}
	c.s.handoff.give(conn)
}

// tlsRecordHeaderLooksLikeHTTP is net/http's test for a plain HTTP
// request sent to the TLS port.
func tlsRecordHeaderLooksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}
