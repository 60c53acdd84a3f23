package ingress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// upstream sends plain requests (no body, no protocol upgrade) to
// containers over pooled HTTP/1.1 keep-alive connections, from the
// handler's own goroutine. http.Transport hands every request to a writer
// goroutine of the connection and the response back from a reader
// goroutine: on this 2-core machine those handoffs (selects, channel
// operations, scheduler) were a tenth of the ingress's CPU under wrk, and
// the response's wait for the reader goroutine added latency. Anything
// else (request bodies, websockets) still goes through http.Transport,
// which also dials for both.
type upstream struct {
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	fallback http.RoundTripper

	maxIdlePerHost int
	idleTimeout    time.Duration
	maxHeaderBytes int64
	// respTimeout is Config.ResponseTimeout (connReader); the fallback
	// transport has it as ResponseHeaderTimeout.
	respTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]*upConn // per address, most recently used last
	closed bool
	// sweep closes connections idle longer than idleTimeout, also those
	// to containers no request goes to any more; armed while any is kept.
	sweep *time.Timer
}

// upConn is one keep-alive connection to a container.
type upConn struct {
	addr     string
	conn     net.Conn
	rd       *connReader
	br       *bufio.Reader
	bw       *bufio.Writer
	reused   bool
	idleFrom time.Time
}

// connReader is what an upConn's bufio.Reader reads through. It bounds
// what a response head may read from the connection (the body is bounded
// by its framing, not by this), and it keeps the response timeout: a
// read deadline for the whole head from the request's end (awaitAnswer),
// then one moved before each read of the body (gap), so that every wait
// for the body's next bytes is bounded, not the body's whole transfer.
// Time spent writing to a slow client between two reads does not count,
// as with nginx's proxy_read_timeout, whose timer runs only while it
// waits to read.
type connReader struct {
	conn net.Conn
	left int64
	gap  time.Duration // 0: reads leave the deadline where it is
	rdl  time.Time     // the read deadline last set
	// aborted: the client went away (upstream.exchange set a past
	// deadline); a deadline set after must not undo it.
	aborted atomic.Bool
}

var errHeaderTooLarge = errors.New("upstream response header too large")

// errResponseTimeout: the container sent no answer head within
// Config.ResponseTimeout of the request's end. The request is not
// retried elsewhere: it may have had effects.
var errResponseTimeout = errors.New("no answer within the response timeout")

func (r *connReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	if r.gap > 0 {
		r.deadlineIn(r.gap)
	}
	n, err := r.conn.Read(p)
	r.left -= int64(n)
	return n, err
}

// awaitAnswer starts the wait for an answer head (the request went
// whole, or a 1xx head came): it must come within d (0: no bound).
func (r *connReader) awaitAnswer(d time.Duration) {
	r.gap = 0
	if d > 0 {
		r.deadlineIn(d)
	}
}

// deadlineIn moves the read deadline to now+d unless it is there within
// a tenth of d (a second at most) already, so the bound holds to that
// precision: a deadline costs a timer update, and a kept connection
// carries many requests a second, a body many reads.
func (r *connReader) deadlineIn(d time.Duration) {
	want := time.Now().Add(d)
	if want.Sub(r.rdl) < min(d/10, time.Second) {
		return
	}
	r.setDeadline(want)
}

func (r *connReader) setDeadline(t time.Time) {
	r.rdl = t
	r.conn.SetReadDeadline(t)
	if r.aborted.Load() {
		r.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// timedOut marks a read error of an answer that the response timeout
// ended: the deadline is the only one on the connection's reads (a
// client gone away is told apart by its context first). A netstack
// connection (gonet) reports it as a net.Error that is not
// os.ErrDeadlineExceeded.
func timedOut(err error, d time.Duration) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w (%s): %w", errResponseTimeout, d, err)
	}
	return err
}

func newUpstream(t *http.Transport) *upstream {
	return &upstream{
		dial:           t.DialContext,
		fallback:       t,
		maxIdlePerHost: t.MaxIdleConnsPerHost,
		idleTimeout:    t.IdleConnTimeout,
		maxHeaderBytes: 1 << 20,
		respTimeout:    t.ResponseHeaderTimeout,
		idle:           map[string][]*upConn{},
	}
}

// direct reports whether req can take the direct path: nothing to stream
// upstream and no connection upgrade to hand over.
func direct(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	return req.URL.Scheme == "http" && len(req.Trailer) == 0 && !wantsUpgrade(req)
}

func wantsUpgrade(req *http.Request) bool {
	if req.Header.Get("Upgrade") != "" {
		return true
	}
	for _, v := range req.Header["Connection"] {
		if strings.Contains(strings.ToLower(v), "upgrade") {
			return true
		}
	}
	return false
}

// roundTripFallback sends what the direct path does not take through
// http.Transport, whose ResponseHeaderTimeout is the response timeout's
// wait for the head; each wait for the body's next bytes is bounded
// here (gapBody). An upgrade (a websocket) is left unbounded once
// answered: the connection is a tunnel, where silence is normal
// (haproxy's `timeout tunnel` takes over from `timeout server` there).
func (u *upstream) roundTripFallback(req *http.Request) (*http.Response, error) {
	if u.respTimeout <= 0 || wantsUpgrade(req) {
		resp, err := u.fallback.RoundTrip(req)
		return resp, headTimedOut(req.Context(), err, u.respTimeout)
	}
	ctx, cancel := context.WithCancel(req.Context())
	resp, err := u.fallback.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, headTimedOut(req.Context(), err, u.respTimeout)
	}
	resp.Body = &gapBody{rc: resp.Body, d: u.respTimeout, cancel: cancel}
	return resp, nil
}

// headTimedOut marks the transport's ResponseHeaderTimeout as the
// response timeout: a dial that timed out is a dialError (retried
// elsewhere), and the transport has no other timeout here.
func headTimedOut(ctx context.Context, err error, d time.Duration) error {
	var de *dialError
	var ne net.Error
	if err != nil && ctx.Err() == nil && !errors.As(err, &de) && errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w (%s): %w", errResponseTimeout, d, err)
	}
	return err
}

// gapBody bounds each wait of a read of a body from http.Transport,
// which has no such bound: a read that waits longer than d cancels the
// request, which closes its connection and fails the read. The timer
// runs only during reads, so a slow client's time does not count.
type gapBody struct {
	rc     io.ReadCloser
	d      time.Duration
	cancel context.CancelFunc
	t      *time.Timer
}

func (b *gapBody) Read(p []byte) (int, error) {
	if b.t == nil {
		b.t = time.AfterFunc(b.d, b.cancel)
	} else {
		b.t.Reset(b.d)
	}
	n, err := b.rc.Read(p)
	b.t.Stop()
	return n, err
}

func (b *gapBody) Close() error {
	if b.t != nil {
		b.t.Stop()
	}
	err := b.rc.Close()
	b.cancel()
	return err
}

func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	if !direct(req) {
		return u.roundTripFallback(req)
	}
	addr := req.URL.Host
	for {
		c, err := u.get(req.Context(), addr)
		if err != nil {
			return nil, err
		}
		resp, err := u.exchange(c, req)
		if err == nil {
			return resp, nil
		}
		c.conn.Close()
		// A kept connection the container closed while idle: nothing of
		// the request was processed, so a replayable one is sent again
		// on a fresh connection, as http.Transport does.
		if c.reused && req.Context().Err() == nil && replayable(req) && staleConnError(err) {
			continue
		}
		return nil, err
	}
}

func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header["Idempotency-Key"] != nil || req.Header["X-Idempotency-Key"] != nil
}

func staleConnError(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "connection reset by peer") || strings.Contains(err.Error(), "broken pipe")
}

// exchange writes req on c and reads the response header. The response
// body gives c back to the pool once read to its end.
func (u *upstream) exchange(c *upConn, req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	// A client that goes away aborts the exchange, as with http.Transport.
	c.rd.aborted.Store(false)
	stop := context.AfterFunc(ctx, func() {
		c.rd.aborted.Store(true)
		c.conn.SetDeadline(time.Unix(1, 0))
	})
	if err := req.Write(c.bw); err != nil {
		stop()
		return nil, fmt.Errorf("write request to %s: %w", c.addr, err)
	}
	if err := c.bw.Flush(); err != nil {
		stop()
		return nil, fmt.Errorf("write request to %s: %w", c.addr, err)
	}
	c.rd.left = u.maxHeaderBytes
	var resp *http.Response
	for informational := 0; ; informational++ {
		c.rd.awaitAnswer(u.respTimeout)
		var err error
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			stop()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("read response from %s: %w", c.addr, timedOut(err, u.respTimeout))
		}
		// 1xx answers (103 Early Hints) precede the real one; a 101
		// was not asked for, since upgrades take the other path.
		if resp.StatusCode >= 200 || informational >= 5 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	c.rd.left = math.MaxInt64
	c.rd.gap = u.respTimeout
	if resp.StatusCode < 200 {
		stop()
		return nil, fmt.Errorf("read response from %s: unexpected status %d", c.addr, resp.StatusCode)
	}
	keep := !resp.Close && !req.Close
	resp.Body = &upBody{rc: resp.Body, u: u, c: c, stop: stop, keep: keep}
	return resp, nil
}

// upBody returns its connection to the pool at the end of the body, or
// closes it if the body was abandoned before its end.
type upBody struct {
	rc   io.ReadCloser
	u    *upstream
	c    *upConn
	stop func() bool
	keep bool
	once sync.Once
}

func (b *upBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.release(true)
	}
	return n, err
}

func (b *upBody) Close() error {
	b.release(b.rc == http.NoBody)
	return nil
}

func (b *upBody) release(complete bool) {
	b.once.Do(func() {
		// stop reports false once the client's context fired: the
		// connection then carries a past deadline and is not reused.
		if b.stop() && complete && b.keep {
			b.u.put(b.c)
			return
		}
		b.c.conn.Close()
	})
}

func (u *upstream) get(ctx context.Context, addr string) (*upConn, error) {
	now := time.Now()
	u.mu.Lock()
	for l := u.idle[addr]; len(l) > 0; l = u.idle[addr] {
		c := l[len(l)-1]
		u.idle[addr] = l[:len(l)-1]
		if now.Sub(c.idleFrom) < u.idleTimeout {
			u.mu.Unlock()
			c.reused = true
			return c, nil
		}
		go c.conn.Close()
	}
	if l, ok := u.idle[addr]; ok && len(l) == 0 {
		delete(u.idle, addr)
	}
	u.mu.Unlock()
	conn, err := u.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	rd := &connReader{conn: conn, left: math.MaxInt64}
	return &upConn{addr: addr, conn: conn, rd: rd,
		br: bufio.NewReaderSize(rd, 16<<10), bw: bufio.NewWriterSize(conn, 4<<10)}, nil
}

func (u *upstream) put(c *upConn) {
	c.idleFrom = time.Now()
	u.mu.Lock()
	if u.closed || len(u.idle[c.addr]) >= u.maxIdlePerHost {
		u.mu.Unlock()
		c.conn.Close()
		return
	}
	u.idle[c.addr] = append(u.idle[c.addr], c)
	if u.sweep == nil {
		u.sweep = time.AfterFunc(u.idleTimeout, u.closeExpired)
	}
	u.mu.Unlock()
}

func (u *upstream) closeExpired() {
	now := time.Now()
	var expired []*upConn
	u.mu.Lock()
	for addr, l := range u.idle {
		// Oldest first: the list is in order of return.
		n := 0
		for n < len(l) && now.Sub(l[n].idleFrom) >= u.idleTimeout {
			n++
		}
		expired = append(expired, l[:n]...)
		if n == len(l) {
			delete(u.idle, addr)
		} else if n > 0 {
			u.idle[addr] = append(l[:0], l[n:]...)
		}
	}
	u.sweep = nil
	if len(u.idle) > 0 && !u.closed {
		u.sweep = time.AfterFunc(u.idleTimeout/2, u.closeExpired)
	}
	u.mu.Unlock()
	for _, c := range expired {
		c.conn.Close()
	}
}

// closeIdle closes every kept connection and keeps no more.
func (u *upstream) closeIdle() {
	u.mu.Lock()
	idle := u.idle
	u.idle, u.closed = map[string][]*upConn{}, true
	if u.sweep != nil {
		u.sweep.Stop()
		u.sweep = nil
	}
	u.mu.Unlock()
	for _, l := range idle {
		for _, c := range l {
			c.conn.Close()
		}
	}
	if t, ok := u.fallback.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}
