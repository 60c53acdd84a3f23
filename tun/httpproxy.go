package tun

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The HTTP proxy into the mesh, for programs that speak HTTP proxies but
// not SOCKS (curl -x, HTTP_PROXY, package managers, JVMs): CONNECT
// host:port opens a tunnel, an absolute-URI request (GET http://web.internal/)
// is forwarded. It is net/http's server and httputil.ReverseProxy: only
// the CONNECT tunnel (hijack, reply, splice) is written here.

const (
	// httpProxyHeaderTimeout bounds reading a request's headers.
	httpProxyHeaderTimeout = 10 * time.Second
	// httpProxyMaxHeaderBytes bounds a request's headers.
	httpProxyMaxHeaderBytes = 16 << 10
	// httpProxyIdleTimeout closes a client's keep-alive connection after
	// this long between requests.
	httpProxyIdleTimeout = 60 * time.Second
	// httpProxyMaxResponseHeader bounds the headers of a mesh server's
	// answer to a forwarded request.
	httpProxyMaxResponseHeader = 64 << 10
)

// ServeHTTPProxy serves the HTTP proxy on ln, connecting through d, until
// ctx is done (then it returns nil) or ln fails. A destination d refuses
// is answered 403 with the reason; ln should be on loopback, since anyone
// who can connect to it can reach the mesh as this machine.
func ServeHTTPProxy(ctx context.Context, ln net.Listener, d *MeshDialer, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "http-proxy", "listen", ln.Addr().String())
	p := newHTTPProxy(ctx, d, logger)
	defer p.close()
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: httpProxyHeaderTimeout,
		MaxHeaderBytes:    httpProxyMaxHeaderBytes,
		IdleTimeout:       httpProxyIdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	lim := newLimitListener(ln, proxyMaxConns)
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(lim)
	if ctx.Err() != nil || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("http proxy on %v: %w", ln.Addr(), err)
}

// httpProxy is the handler: CONNECT tunnels and forwarded requests.
type httpProxy struct {
	ctx  context.Context // the server's: its end closes every tunnel
	d    *MeshDialer
	log  *slog.Logger
	rp   *httputil.ReverseProxy
	tr   *http.Transport
	pool bufPool
	wg   sync.WaitGroup // tunnels, which outlive their handler
}

func newHTTPProxy(ctx context.Context, d *MeshDialer, logger *slog.Logger) *httpProxy {
	p := &httpProxy{ctx: ctx, d: d, log: logger}
	p.tr = &http.Transport{
		Proxy: nil, // never the environment's proxy: this is the proxy
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := splitHostPort(addr, 80)
			if err != nil {
				return nil, err
			}
			return d.DialTCP(ctx, host, port)
		},
		MaxIdleConns:           32,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        httpProxyIdleTimeout,
		MaxResponseHeaderBytes: httpProxyMaxResponseHeader,
		DisableCompression:     true, // hand the body on as the server sent it
	}
	p.rp = &httputil.ReverseProxy{
		// The request already names its destination (an absolute URI);
		// Rewrite leaves it, drops X-Forwarded-* that a client sent, and
		// marks the request so that it cannot come back round.
		Rewrite:      func(pr *httputil.ProxyRequest) { pr.Out.Header.Add("Via", viaToken) },
		Transport:    p.tr,
		ErrorHandler: p.forwardError,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	return p
}

// close waits for the tunnels (the server's context has ended them) and
// drops idle connections to mesh servers.
func (p *httpProxy) close() {
	p.wg.Wait()
	p.tr.CloseIdleConnections()
}

// viaToken marks a request this proxy forwarded (RFC 9110's Via). A proxy
// listening on an address the mesh reaches (given explicitly, in kernel
// mode) could otherwise be asked for itself and forward to itself until
// every client slot is taken.
const viaToken = "1.1 uncloud"

func (p *httpProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, v := range r.Header.Values("Via") {
		if strings.Contains(v, viaToken) {
			proxyRefuse(w, http.StatusLoopDetected, "this request came through uncloud's HTTP proxy already")
			return
		}
	}
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Host == "" {
		proxyRefuse(w, http.StatusBadRequest, "this is uncloud's HTTP proxy into the mesh: send absolute URIs (GET http://web.internal/) or CONNECT host:port")
		return
	}
	if r.URL.Scheme != "http" {
		proxyRefuse(w, http.StatusBadRequest, fmt.Sprintf("%s:// is not forwarded; use CONNECT for https", r.URL.Scheme))
		return
	}
	host, _, err := splitHostPort(r.URL.Host, 80)
	if err != nil {
		proxyRefuse(w, http.StatusBadRequest, err.Error())
		return
	}
	// Refuse what is never reachable before anything is dialled or
	// resolved; what a name resolves to is checked when the transport
	// dials (forwardError).
	if err := p.d.Check(host); err != nil {
		p.log.Debug("refused", "client", r.RemoteAddr, "host", r.URL.Host, "err", err)
		proxyRefuse(w, http.StatusForbidden, refusal(err))
		return
	}
	p.rp.ServeHTTP(w, r)
}

// forwardError answers a forwarded request that failed before the mesh
// server answered.
func (p *httpProxy) forwardError(w http.ResponseWriter, r *http.Request, err error) {
	// The host only: a URL's path and query may hold secrets.
	p.log.Debug("forward failed", "client", r.RemoteAddr, "host", r.URL.Host, "err", err)
	switch {
	case errors.Is(err, ErrNotMesh):
		proxyRefuse(w, http.StatusForbidden, refusal(err))
	case errors.Is(err, context.DeadlineExceeded):
		proxyRefuse(w, http.StatusGatewayTimeout, err.Error())
	default:
		proxyRefuse(w, http.StatusBadGateway, err.Error())
	}
}

// connect opens a tunnel: the dial first, so a refusal or failure is an
// HTTP answer, then "200 Connection established" and bytes both ways.
func (p *httpProxy) connect(w http.ResponseWriter, r *http.Request) {
	host, port, err := splitHostPort(r.Host, 0)
	if err != nil || port == 0 {
		proxyRefuse(w, http.StatusBadRequest, fmt.Sprintf("CONNECT %q: want host:port", r.Host))
		return
	}
	up, err := p.d.DialTCP(r.Context(), host, port)
	if err != nil {
		p.forwardError(w, r, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		proxyRefuse(w, http.StatusInternalServerError, "this connection cannot be taken over for a tunnel")
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		up.Close()
		p.log.Debug("hijack failed", "client", r.RemoteAddr, "err", err)
		return
	}
	// The server's header deadline is still set on the connection.
	c.SetDeadline(time.Time{})
	if _, err := brw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n"); err == nil {
		err = brw.Flush()
	}
	if err != nil {
		c.Close()
		up.Close()
		return
	}
	var client net.Conn = c
	if brw.Reader.Buffered() > 0 {
		// A client may send its first bytes (a TLS hello) right behind
		// the CONNECT; they are in the server's reader.
		client = &bufferedConn{Conn: c, r: brw.Reader}
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		a, b := idleConns(client, up, proxyTunnelIdle)
		splice(p.ctx, a, b, &p.pool)
	}()
}

// bufferedConn reads what a bufio.Reader holds before the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// refusal is the body of a 403: the reason and what is allowed.
func refusal(err error) string {
	return "uncloud HTTP proxy: refused: " + err.Error() + " (only mesh addresses and *.internal names are reachable through this proxy)"
}

// proxyRefuse answers with a plain-text reason.
func proxyRefuse(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}

// splitHostPort splits host[:port] (a URL's or CONNECT's authority),
// with def for a missing port.
func splitHostPort(hostport string, def uint16) (string, uint16, error) {
	host, portText, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: the whole is the host (an IPv6 literal keeps its brackets).
		if def == 0 {
			return "", 0, fmt.Errorf("%q has no port", hostport)
		}
		return hostport, def, nil
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("%q: port %q is not 1..65535", hostport, portText)
	}
	return host, uint16(port), nil
}
