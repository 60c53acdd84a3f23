package ingress

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// evConn is one client connection on an event loop: fastConn's request
// cycle as a state machine driven by readiness of its socket and of its
// request's container socket. Its buffers are fixed: the head buffer
// (fastHeadBuf, as fastConn's) and the response head's rewrite; the body
// streams from the container connection's buffer.
type evConn struct {
	l        *evLoop
	fd       int
	clientIP string
	buf      []byte // request head (and body); buf[:n] is unread input
	n        int
	head     reqHead
	resp     respHead

	evReady
	phase     evPhase
	active    time.Time // last request's end or the connection's start
	headStart time.Time // first byte of an unfinished head
	progress  time.Time // last byte moved for the request in flight
	// waitFrom: the request went whole to the container (or a 1xx head
	// came): its answer's head is due within ResponseTimeout.
	waitFrom time.Time

	// The request in flight.
	rt       *Route
	b        *backend
	up       *evUp
	start    time.Time
	out      sinkBuf // response head rewrite for the client, unsent
	outOff   int
	sent     bool // some of the response went to the client
	keep     bool // the client connection carries another request
	noBody   bool
	frame    evFrame
	left     int64 // Content-Length framing: body bytes still to come
	chunks   chunkScanner
	pend     int // body bytes at up.rbuf[up.rpos:] scanned, not yet sent
	bodySent int64
	iov      [2]unix.Iovec
	// informational counts the 1xx heads before the final one.
	informational int
}

type evPhase uint8

const (
	phIdle     evPhase = iota // reading a request head
	phUpstream                // request going to the container, its answer's head awaited
	phBody                    // streaming the answer
)

type evFrame uint8

const (
	frNone evFrame = iota
	frLength
	frChunked
	frClose
)

func (l *evLoop) newConn(a evAdopt) {
	c := &evConn{l: l, fd: a.fd, clientIP: a.clientIP, buf: make([]byte, fastHeadBuf),
		evReady: evReady{rdReady: true, wrReady: true}, active: l.now}
	c.out.b = make([]byte, 0, 4<<10)
	if err := l.register(a.fd, evItem{c: c}); err != nil {
		unix.Close(a.fd)
		l.s.wg.Done()
		return
	}
	l.conns[c] = struct{}{}
	c.advance()
}

// evReady is what epoll announced of a socket and was not used up yet
// (edge-triggered: nothing is announced twice).
type evReady struct {
	rdReady, wrReady bool
	// hup: the peer's end (or an error) was announced; no edge follows
	// it, so a short read no longer means drained (the read that
	// returns 0 is still to come).
	hup bool
}

func (r *evReady) note(ev uint32) {
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		r.rdReady = true
	}
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		r.hup = true
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		r.wrReady = true
	}
}

func (c *evConn) onEvent(ev uint32) {
	c.note(ev)
	switch c.phase {
	case phIdle:
		c.advance()
	case phUpstream:
		c.flushOut() // 1xx heads; the client's next bytes wait (backpressure)
	case phBody:
		c.pump()
	}
}

// advance reads and starts requests while the connection is idle.
func (c *evConn) advance() {
	for c.phase == phIdle && c.fd >= 0 {
		if c.n > 0 {
			res, _ := parseHead(c.buf[:c.n], &c.head)
			switch res {
			case parseOK:
				c.headStart = time.Time{}
				c.begin()
				continue
			case parseNeedMore:
				if c.n == len(c.buf) {
					c.handOver() // head larger than the buffer
					return
				}
				if c.headStart.IsZero() {
					c.headStart = c.l.now
				}
			default: // fallback or bad: fastConn answers as it does
				c.handOver()
				return
			}
		}
		if !c.rdReady {
			return
		}
		if c.l.stopping.Load() && c.n == 0 {
			c.close()
			return
		}
		k, e := rawRead(c.fd, c.buf[c.n:])
		switch {
		case e == unix.EAGAIN:
			c.rdReady = false
		case e != 0 || k == 0:
			c.close() // gone, or closed (a partial head is dropped, as fastConn does)
			return
		default:
			if k < len(c.buf)-c.n && !c.hup {
				c.rdReady = false // drained: epoll tells of more
			}
			c.n += k
		}
	}
}

// begin starts the parsed request, or hands the connection over.
func (c *evConn) begin() {
	h := &c.head
	rt := routeFor(c.l.s.in, h, false)
	if rt == nil || int64(c.n-h.headLen) < h.contentLength {
		c.handOver()
		return
	}
	b := pick(rt, c.l.s.in.fwd.policy)
	if b == nil {
		c.handOver() // fastConn answers 502
		return
	}
	sa, ok := c.l.sockaddr(b.addr)
	if !ok {
		c.handOver()
		return
	}
	c.rt, c.b = rt, b
	if c.l.s.in.cfg.Metrics != nil {
		c.start = time.Now()
	}
	c.sent, c.pend, c.bodySent, c.outOff = false, 0, 0, 0
	c.out.b = c.out.b[:0]
	c.progress = c.l.now
	b.inflight.Add(1)
	c.send(sa)
}

// send writes the request on a connection to c.b.
func (c *evConn) send(sa unix.Sockaddr) {
	h := &c.head
	u, err := c.l.getUp(c.b, sa)
	if err != nil {
		c.upFailed(err, true)
		return
	}
	c.up, u.owner = u, c
	c.waitFrom = time.Time{}
	w := &u.wbuf // in u, not here: as a headWriter it would escape, an allocation per request
	w.b = w.b[:0]
	writeRequestHead(w, h, c.clientIP, false)
	w.Write(c.buf[h.headLen : h.headLen+int(h.contentLength)])
	u.woff = 0
	c.phase = phUpstream
	c.upAdvance()
}

// upAdvance moves the request on when its container socket is ready.
func (c *evConn) upAdvance() {
	u := c.up
	if u.connecting {
		if !u.wrReady {
			return
		}
		if e, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
			if err == nil {
				err = unix.Errno(e)
			}
			c.upFailed(fmt.Errorf("connect to %s: %w", u.b.addr, err), true)
			return
		}
		u.connecting = false
	}
	for u.woff < len(u.wbuf.b) {
		if !u.wrReady {
			return
		}
		k, e := rawWrite(u.fd, u.wbuf.b[u.woff:])
		if e == unix.EAGAIN {
			u.wrReady = false
			return
		}
		if e != 0 {
			c.upFailed(fmt.Errorf("write request to %s: %w", u.b.addr, e), false)
			return
		}
		u.woff += k
		if u.woff < len(u.wbuf.b) {
			u.wrReady = false
		}
		c.progress = c.l.now
	}
	if c.waitFrom.IsZero() {
		c.waitFrom = c.l.now // the request went whole: the response timeout runs
	}
	if c.phase == phBody {
		c.pump()
		return
	}
	for c.phase == phUpstream {
		if !c.readHead() {
			return
		}
	}
}

// readHead reads the container's answer until its head is whole and
// handles it; false while waiting or after a failure.
func (c *evConn) readHead() bool {
	u := c.up
	p := u.rbuf[u.rpos:u.rend]
	if end := indexHeadEnd(p); end >= 0 {
		return c.gotHead(p[:end])
	}
	if u.rend == len(u.rbuf) {
		if u.rpos == 0 {
			c.upFailed(fmt.Errorf("read response from %s: %w", u.b.addr, errRespHeadTooLarge), false)
			return false
		}
		u.rend = copy(u.rbuf, u.rbuf[u.rpos:u.rend])
		u.rpos = 0
	}
	if !u.rdReady {
		return false
	}
	k, e := rawRead(u.fd, u.rbuf[u.rend:])
	switch {
	case e == unix.EAGAIN:
		u.rdReady = false
		return false
	case e != 0:
		c.upFailed(fmt.Errorf("read response from %s: %w", u.b.addr, e), false)
		return false
	case k == 0:
		err := fmt.Errorf("read response from %s: %w", u.b.addr, errUnexpectedEOF(u.rend > u.rpos))
		c.upFailed(err, false)
		return false
	}
	if k < len(u.rbuf)-u.rend && !u.hup {
		u.rdReady = false
	}
	u.rend += k
	c.progress = c.l.now
	return true
}

// gotHead handles a whole response head at the start of up's buffer, as
// fastConn.exchange does.
func (c *evConn) gotHead(head []byte) bool {
	u, r, h := c.up, &c.resp, &c.head
	if err := parseRespHead(head, r); err != nil {
		c.upFailed(fmt.Errorf("read response from %s: %w", u.b.addr, err), false)
		return false
	}
	if r.status < 200 {
		if r.status == 101 || c.informational >= 5 {
			c.upFailed(fmt.Errorf("read response from %s: unexpected status %d", u.b.addr, r.status), false)
			return false
		}
		// 103 Early Hints and the like go to the client as they come.
		c.informational++
		writeRespHead(&c.out, head, r, false)
		u.rpos += len(head)
		c.sent = true
		c.waitFrom = c.l.now
		return c.flushOut()
	}
	c.informational = 0
	c.noBody = h.isHead() || r.status == 204 || r.status == 304
	switch {
	case c.noBody:
		c.frame = frNone
	case r.chunked:
		c.frame, c.chunks = frChunked, chunkScanner{}
	case r.contentLength < 0:
		c.frame = frClose
	default:
		c.frame, c.left = frLength, r.contentLength
	}
	c.keep = !h.closeConn && c.frame != frClose && !c.l.stopping.Load()
	writeRespHead(&c.out, head, r, !c.keep)
	u.rpos += len(head)
	c.sent = true
	c.phase = phBody
	c.pump()
	return false
}

// pump streams the body by its framing: what is in the container
// connection's buffer goes out (with the head, in one writev), and the
// container is read only once it all went (backpressure).
func (c *evConn) pump() {
	u := c.up
	for c.fd >= 0 {
		// Scan what is buffered for this response's bytes.
		if avail := u.rend - u.rpos - c.pend; avail > 0 {
			switch c.frame {
			case frLength:
				take := int(min(int64(avail), c.left))
				c.left -= int64(take)
				c.pend += take
			case frClose:
				c.pend += avail
			case frChunked:
				used, err := c.chunks.scan(u.rbuf[u.rpos+c.pend : u.rend])
				c.pend += used
				if err != nil {
					c.abortRequest(fmt.Errorf("read response body from %s: %w", u.b.addr, err))
					return
				}
			}
		}
		if c.outOff < len(c.out.b) || c.pend > 0 {
			if !c.wrReady {
				return
			}
			head := c.out.b[c.outOff:]
			k, e := rawWritev(c.fd, &c.iov, head, u.rbuf[u.rpos:u.rpos+c.pend])
			if e == unix.EAGAIN {
				c.wrReady = false
				return
			}
			if e != 0 {
				c.abortRequest(fmt.Errorf("write response: %w", e))
				return
			}
			c.progress = c.l.now
			if k < len(head)+c.pend {
				c.wrReady = false
			}
			if hk := min(k, len(head)); hk > 0 {
				c.outOff += hk
				k -= hk
			}
			u.rpos += k
			c.pend -= k
			if c.frame != frChunked {
				c.bodySent += int64(k)
			}
			if u.rpos == u.rend {
				u.rpos, u.rend = 0, 0
			}
			continue
		}
		// Everything scanned went out.
		if c.frameDone() {
			c.finish()
			return
		}
		if u.eof {
			if c.frame == frClose {
				c.finish()
				return
			}
			c.abortRequest(fmt.Errorf("read response body from %s: %w", u.b.addr, errUnexpectedEOF(true)))
			return
		}
		if !u.rdReady {
			return
		}
		if u.rpos == u.rend {
			u.rpos, u.rend = 0, 0
		}
		k, e := rawRead(u.fd, u.rbuf[u.rend:])
		switch {
		case e == unix.EAGAIN:
			u.rdReady = false
			return
		case e != 0:
			c.abortRequest(fmt.Errorf("read response body from %s: %w", u.b.addr, e))
			return
		case k == 0:
			u.eof = true
		default:
			if k < len(u.rbuf)-u.rend && !u.hup {
				u.rdReady = false
			}
			u.rend += k
			c.progress = c.l.now
		}
	}
}

func (c *evConn) frameDone() bool {
	switch c.frame {
	case frNone:
		return true
	case frLength:
		return c.left == 0
	case frChunked:
		return c.chunks.done
	}
	return false
}

// flushOut writes the pending head (1xx) while the final answer is
// awaited; false when the client failed.
func (c *evConn) flushOut() bool {
	if c.outOff == len(c.out.b) || !c.wrReady {
		return true
	}
	k, e := rawWrite(c.fd, c.out.b[c.outOff:])
	if e == unix.EAGAIN {
		c.wrReady = false
		return true
	}
	if e != 0 {
		c.abortRequest(fmt.Errorf("write response: %w", e))
		return false
	}
	c.outOff += k
	if c.outOff < len(c.out.b) {
		c.wrReady = false
	}
	return true
}

// finish ends a request whose answer went out whole.
func (c *evConn) finish() {
	u, r := c.up, &c.resp
	if r.chunked {
		c.bodySent = c.chunks.data
	}
	c.observe(r.status)
	c.l.served.Add(1)
	// Bytes after the answer (a container that answered HEAD with a
	// body) would be read as the next answer: that connection is not
	// kept.
	if r.closeConn || c.frame == frClose || u.rend > u.rpos || u.eof {
		u.close()
	} else {
		c.l.putUp(u)
	}
	c.endRequest()
	c.consumed()
	if !c.keep || c.l.stopping.Load() {
		c.close()
		return
	}
	c.active = c.l.now
	c.advance()
}

func (c *evConn) observe(status int) {
	if m := c.l.s.in.cfg.Metrics; m != nil {
		m.observe(c.rt, status, time.Since(c.start))
	}
}

func (c *evConn) endRequest() {
	c.b.inflight.Add(-1)
	c.up, c.b, c.rt = nil, nil, nil
	c.phase = phIdle
	c.out.b = c.out.b[:0]
	c.outOff = 0
}

// consumed drops the finished request from buf (dropRequest).
func (c *evConn) consumed() { c.n = dropRequest(c.buf, c.n, &c.head) }

// abort closes the connection and any request in flight (shutdown's end).
func (c *evConn) abort() {
	if c.up != nil {
		c.up.close()
		c.endRequest()
	}
	c.close()
}

func (c *evConn) close() {
	if c.fd < 0 {
		return
	}
	c.l.forget(c.fd)
	unix.Close(c.fd)
	c.fd = -1
	delete(c.l.conns, c)
	c.l.s.wg.Done()
}

// handOver passes the connection, with the bytes read of its next
// request, to the goroutine path (fastConn), which serves it or hands it
// on to net/http.
func (c *evConn) handOver() {
	l := c.l
	fd := c.fd
	l.forget(fd)
	c.fd = -1
	delete(l.conns, c)
	defer l.s.wg.Done()
	l.s.handOverFd(fd, c.buf, c.n)
	c.buf = nil
}

// handOverFd starts a fastConn on fd with buf[:n] read already; fd is
// the fastConn's (or closed) after.
func (s *fastServer) handOverFd(fd int, buf []byte, n int) bool {
	f := os.NewFile(uintptr(fd), "client")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		s.in.log.Warn("ingress: hand a connection to the goroutine path", "err", err)
		return true
	}
	s.start(&fastConn{s: s, raw: conn, buf: buf, n: n}, true)
	return true
}

// errUnexpectedEOF is the container's close: io.EOF before any byte of
// an answer (a kept connection it had closed: stale), unexpected after.
func errUnexpectedEOF(partial bool) error {
	if partial {
		return io.ErrUnexpectedEOF
	}
	return io.EOF
}

// indexHeadEnd is the length of the head at the start of p, or -1.
func indexHeadEnd(p []byte) int {
	if i := bytes.Index(p, crlfcrlf); i >= 0 {
		return i + 4
	}
	return -1
}
