package ingress

import (
	"fmt"
	"time"
)

// How a request on an event loop ends other than with its whole answer:
// a container that failed before answering (retried on the goroutine path
// or answered 502), one that did not answer in time (504), and a request
// cut after part of its answer went out. The sweep that applies the
// timeouts of requests in flight is here too.

// upFailed handles a container failure before any of the answer went to
// the client, as fastConn.forward does: a failed connect, or any failure
// of a request without body, puts the container aside and the goroutine
// path retries the request (it is still in buf) on another or answers
// 502; a kept connection the container had closed is retried here
// without blame; a request with a body is answered 502.
func (c *evConn) upFailed(err error, dial bool) {
	if c.sent {
		c.abortRequest(err)
		return
	}
	h := &c.head
	u := c.up
	stale := !dial && u != nil && u.reused && h.contentLength == 0 && h.replayable() && staleConnError(err)
	if u != nil {
		u.close()
	}
	if stale {
		// Nothing of the request was processed: again on another
		// connection (a fresh one is not retried again), as
		// fastConn.try does.
		c.up = nil
		sa, _ := c.l.sockaddr(c.b.addr)
		c.send(sa)
		return
	}
	b, rt := c.b, c.rt
	c.endRequest()
	f := c.l.s.in.fwd
	switch {
	case dial || h.contentLength == 0:
		b.markFailed(f.failTimeout)
		f.log.Warn("container failed; put aside", "service", rt.Service, "container", b.name,
			"addr", b.addr, "for", f.failTimeout, "err", err)
		c.handOver()
	default:
		f.log.Warn("upstream failed", "host", string(h.host), "service", rt.Service, "err", err)
		msg := "502 bad gateway: service " + rt.Service + " did not answer\n"
		w := sinkBuf{b: c.out.b[:0]}
		writeGatewayError(&w, 502, msg, false, h.isHead())
		rawWrite(c.fd, w.b) // a fresh connection's socket buffer takes it
		c.out.b = w.b[:0]
		if m := c.l.s.in.cfg.Metrics; m != nil {
			m.observe(rt, 502, time.Since(c.start))
		}
		c.close()
	}
}

// abortRequest ends a request that failed after part of its answer went
// out (or the client went away): the client sees it cut.
func (c *evConn) abortRequest(err error) {
	c.l.s.in.log.Debug("ingress: request cut", "remote", c.clientIP, "err", err)
	if c.up != nil {
		c.up.close()
		c.observe(c.resp.status)
		c.endRequest()
	}
	c.close()
}

// sweepRequest applies the timeouts of a request in flight: a client
// that reads none of its answer for IdleTimeout, a container connection
// that a partition cut (backend.closeConns), a container that does not
// answer within ResponseTimeout (Config: nginx's proxy_read_timeout,
// haproxy's `timeout server`). Sweeps come about once a second, so a
// timeout ends 0-2 s after it is due.
func (c *evConn) sweepRequest() {
	u := c.up
	if u == nil {
		return
	}
	if u.connecting && c.l.now.Sub(c.progress) >= 5*time.Second {
		c.upFailed(fmt.Errorf("connect to %s: timed out", u.b.addr), true)
		return
	}
	if u.cuts != u.b.cuts.Load() {
		c.upFailed(fmt.Errorf("connection to %s cut: its machine is unreachable", u.b.addr), false)
		return
	}
	d := c.l.s.in.cfg.ResponseTimeout
	switch {
	case c.phase == phUpstream && !c.waitFrom.IsZero() && c.l.now.Sub(c.waitFrom) >= d:
		c.responseTimedOut(fmt.Errorf("read response from %s: %w (%s)", u.b.addr, errResponseTimeout, d))
		return
	case c.phase == phBody && c.outOff == len(c.out.b) && c.pend == 0 && c.l.now.Sub(c.progress) >= d:
		// Everything read went out: the loop waits for the container
		// (while it waits for the client, the container's silence does
		// not count), and progress is the last read or write.
		c.abortRequest(fmt.Errorf("read response body from %s: nothing for %s (the response timeout)", u.b.addr, d))
		return
	}
	if !c.wrReady && c.l.now.Sub(c.progress) >= c.l.s.in.cfg.IdleTimeout {
		c.abortRequest(fmt.Errorf("client read nothing for %s", c.l.s.in.cfg.IdleTimeout))
	}
}

// responseTimedOut ends a request whose container sent no answer head
// in time: with a 1xx head sent, the client sees the request cut;
// otherwise it gets a 504 and the connection stays for the next request,
// as with the goroutine path's (the request was read whole). The
// request is not handed over to be retried on another container: it
// may have had effects. The container connection is closed: its late
// answer must not be taken for the next request's.
func (c *evConn) responseTimedOut(err error) {
	if c.sent {
		c.abortRequest(err)
		return
	}
	h := &c.head
	f := c.l.s.in.fwd
	f.log.Warn("container did not answer in time", "host", string(h.host), "service", c.rt.Service, "err", err)
	c.up.close()
	// finish counts it (a 5xx in the metrics) and goes on with the next
	// request; closeConn keeps it from putting the closed connection back.
	c.resp = respHead{status: 504, contentLength: -1, closeConn: true}
	c.keep = !h.closeConn && !c.l.stopping.Load()
	w := sinkBuf{b: c.out.b[:0]}
	writeGatewayError(&w, 504, f.timeoutMessage(c.rt), c.keep, h.isHead())
	c.out.b, c.outOff = w.b, 0
	c.frame, c.noBody, c.pend = frNone, true, 0
	c.sent = true
	c.phase = phBody
	c.pump()
}
