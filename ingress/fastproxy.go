package ingress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unsafe"
)

// The fast path's exchange with a container: the request head is written
// as received, less hop-by-hop fields and with X-Forwarded-* set, the body
// by its Content-Length; the response head is parsed in place in the
// upstream connection's read buffer and the body streamed back by its
// framing (Content-Length, chunked passed through as it is, or up to the
// container's close). Retries follow routeTransport: another container
// after a failed connect, or after any failure of a request without body
// that was not answered yet, but not after the response timeout
// (connReader): that is answered 504.

// fastResponse is what the exchange reports for metrics and the log.
type fastResponse struct {
	status int
	bytes  int64
}

// proxy forwards the parsed request to a container of rt and streams the
// answer back; false when the client connection must close.
func (c *fastConn) proxy(rt *Route) bool {
	in := c.s.in
	h := &c.head
	var start time.Time
	var method, host, uri string
	logging := in.cfg.AccessLog != nil
	if logging || in.cfg.Metrics != nil {
		start = time.Now()
	}
	if logging {
		method, host, uri = string(h.method), string(h.host), string(h.target)
	}
	resp, keep := c.forward(rt)
	if in.cfg.Metrics != nil {
		in.cfg.Metrics.observe(rt, resp.status, time.Since(start))
	}
	if logging {
		in.cfg.AccessLog.Info("request", "remote", c.raw.RemoteAddr().String(), "proto", "HTTP/1.1", "method", method,
			"host", host, "uri", uri, "status", resp.status, "bytes", resp.bytes,
			"service", rt.Service, "duration", time.Since(start), "tls", c.https)
	}
	return keep
}

// forward tries the request on up to maxTries containers.
func (c *fastConn) forward(rt *Route) (fastResponse, bool) {
	f := c.s.in.fwd
	h := &c.head
	bodyless := h.contentLength == 0
	var triedArr [maxTries]*backend
	tried := triedArr[:0]
	b := pick(rt, f.policy)
	if b == nil {
		f.log.Warn("no container to serve", "host", string(h.host), "service", rt.Service)
		return c.gatewayError(502, fmt.Sprintf("502 bad gateway: service %s has no running container this machine can reach\n", rt.Service), bodyless)
	}
	for {
		resp, keep, sent, err := c.try(b)
		if err == nil {
			return resp, keep
		}
		var de *dialError
		// A container that took the request and did not answer in time
		// is not asked again, nor another: the request may have had
		// effects.
		timeout := errors.Is(err, errResponseTimeout)
		retry := !timeout && (errors.As(err, &de) || (bodyless && !sent))
		if retry {
			b.markFailed(f.failTimeout)
			f.log.Warn("container failed; put aside", "service", rt.Service, "container", b.name,
				"addr", b.addr, "for", f.failTimeout, "err", err)
			tried = append(tried, b)
		}
		if retry && len(tried) < maxTries {
			if b = pick(rt, f.policy, tried...); b != nil {
				continue
			}
		}
		if sent {
			// Part of a response went out: the client sees it cut.
			f.log.Debug("ingress: request cut", "remote", c.clientIP, "err", err)
			return resp, false
		}
		// The connection carries another request only if this one's
		// body is wholly read: the rest of a body must never be taken
		// for the next request.
		if timeout {
			f.log.Warn("container did not answer in time", "host", string(h.host), "service", rt.Service, "err", err)
			ok := c.n >= h.headLen+int(h.contentLength) // it was sent whole
			return c.gatewayError(504, f.timeoutMessage(rt), ok)
		}
		f.log.Warn("upstream failed", "host", string(h.host), "service", rt.Service, "err", err)
		ok := bodyless || (errors.As(err, &de) && c.n >= h.headLen+int(h.contentLength))
		return c.gatewayError(502, fmt.Sprintf("502 bad gateway: service %s did not answer\n", rt.Service), ok)
	}
}

// try runs the exchange on one container. sent reports that some of the
// response went to the client (so nothing can be retried).
func (c *fastConn) try(b *backend) (resp fastResponse, keep, sent bool, err error) {
	u := c.s.in.fwd.up
	h := &c.head
	b.inflight.Add(1)
	defer b.inflight.Add(-1)
	for {
		uc, err := u.get(context.Background(), b.addr)
		if err != nil {
			return resp, false, false, err
		}
		resp, keep, sent, err = c.exchange(uc)
		if err == nil {
			return resp, keep, sent, nil
		}
		uc.conn.Close()
		// A kept connection the container closed while idle: nothing
		// of the request was processed; try a fresh one, as
		// upstream.RoundTrip does.
		if !sent && uc.reused && h.contentLength == 0 && h.replayable() && staleConnError(err) {
			continue
		}
		return resp, false, sent, err
	}
}

// exchange sends the request on uc and streams the response back. On
// success uc went back to the pool or was closed.
func (c *fastConn) exchange(uc *upConn) (resp fastResponse, keep, sent bool, err error) {
	h := &c.head
	if err := c.writeRequest(uc); err != nil {
		return resp, false, false, err
	}
	br := uc.br
	var head []byte
	r := &c.resp
	d := c.s.in.cfg.ResponseTimeout
	for informational := 0; ; informational++ {
		// The head must come within d of the request's end (or of the
		// 1xx head before it).
		uc.rd.awaitAnswer(d)
		if head, err = peekHead(br); err != nil {
			return resp, false, sent, fmt.Errorf("read response from %s: %w", uc.addr, timedOut(err, d))
		}
		if err = parseRespHead(head, r); err != nil {
			return resp, false, sent, fmt.Errorf("read response from %s: %w", uc.addr, err)
		}
		if r.status >= 200 {
			break
		}
		if r.status == 101 || informational >= 5 {
			return resp, false, sent, fmt.Errorf("read response from %s: unexpected status %d", uc.addr, r.status)
		}
		// 103 Early Hints and the like go to the client as they come.
		writeRespHead(c.bw, head, r, false)
		br.Discard(len(head))
		if err = c.bw.Flush(); err != nil {
			return resp, false, true, err
		}
		sent = true
	}
	resp.status = r.status
	noBody := h.isHead() || r.status == 204 || r.status == 304
	untilClose := !noBody && !r.chunked && r.contentLength < 0
	keep = !h.closeConn && !untilClose && !c.s.closing.Load()
	writeRespHead(c.bw, head, r, !keep)
	br.Discard(len(head))
	sent = true
	uc.rd.gap = d // from here each wait for the body's next bytes is bounded
	var n int64
	switch {
	case noBody:
	case r.chunked:
		n, err = copyChunked(c.bw, br)
	case untilClose:
		n, err = copyN(c.bw, br, -1)
	default:
		n, err = copyN(c.bw, br, r.contentLength)
	}
	resp.bytes = n
	if err != nil {
		return resp, false, true, err
	}
	if err = c.bw.Flush(); err != nil {
		uc.conn.Close()
		return resp, false, true, nil
	}
	// Bytes after a response without body (a container that answered
	// HEAD with one) would be read as the next response: not kept.
	if r.closeConn || untilClose || (noBody && br.Buffered() > 0) {
		uc.conn.Close()
	} else {
		c.s.in.fwd.up.put(uc)
	}
	c.consumed()
	return resp, keep, true, nil
}

// consumed drops the finished request from buf (dropRequest).
func (c *fastConn) consumed() { c.n = dropRequest(c.buf, c.n, &c.head) }

// dropRequest drops the request h (head and body) from the start of
// buf[:n], keeping any pipelined bytes after it, and returns what is left.
func dropRequest(buf []byte, n int, h *reqHead) int {
	used := h.headLen + int(h.contentLength)
	if used >= n {
		return 0
	}
	return copy(buf, buf[used:n])
}

// writeRequest writes the head and the body to the container.
func (c *fastConn) writeRequest(uc *upConn) error {
	h := &c.head
	w := uc.bw
	writeRequestHead(w, h, c.clientIP, c.https)
	if h.contentLength > 0 {
		inBuf := min(int64(c.n-h.headLen), h.contentLength)
		w.Write(c.buf[h.headLen : h.headLen+int(inBuf)])
		if left := h.contentLength - inBuf; left > 0 {
			if err := c.copyBody(w, left); err != nil {
				return err
			}
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write request to %s: %w", uc.addr, err)
	}
	return nil
}

// writeRequestHead writes the head as the container gets it: as
// received, less hop-by-hop fields (parseHead left them out), with
// X-Forwarded-* set.
func writeRequestHead(w headWriter, h *reqHead, clientIP string, https bool) {
	w.Write(h.method)
	w.WriteByte(' ')
	w.Write(h.target)
	w.WriteString(" HTTP/1.1\r\n")
	for _, f := range h.fields[:h.nfields] {
		w.Write(f.name)
		w.WriteString(": ")
		w.Write(f.value)
		w.WriteString("\r\n")
	}
	w.WriteString("X-Forwarded-For: ")
	w.WriteString(clientIP)
	w.WriteString("\r\nX-Forwarded-Host: ")
	w.Write(h.host)
	if https {
		w.WriteString("\r\nX-Forwarded-Proto: https\r\n\r\n")
	} else {
		w.WriteString("\r\nX-Forwarded-Proto: http\r\n\r\n")
	}
}

// copyBody streams the rest of a request body from the client. The head
// was written already, so buf is free; the body is all that remains of
// the client's input (nothing is read past it).
func (c *fastConn) copyBody(w *bufio.Writer, left int64) error {
	h := &c.head
	if d := c.s.in.cfg.ReadTimeout; d > 0 {
		c.conn.SetReadDeadline(time.Now().Add(d))
	} else {
		c.conn.SetReadDeadline(time.Time{})
	}
	c.rdl = time.Time{}
	for left > 0 {
		k, err := c.conn.Read(c.buf[:min(int64(len(c.buf)), left)])
		if k > 0 {
			if _, werr := w.Write(c.buf[:k]); werr != nil {
				return werr
			}
			left -= int64(k)
		}
		if err != nil && left > 0 {
			return fmt.Errorf("read request body: %w", err)
		}
	}
	// Everything up to the body's end is consumed.
	c.n = h.headLen + int(h.contentLength)
	return nil
}

// gatewayError answers 502 or 504 with msg; keep: the connection may
// carry another request, unless the client said it closes. It reports
// whether it does.
func (c *fastConn) gatewayError(status int, msg string, keep bool) (fastResponse, bool) {
	keep = keep && !c.head.closeConn
	writeGatewayError(c.bw, status, msg, keep, c.head.isHead())
	c.bw.Flush()
	if keep {
		c.consumed()
	}
	return fastResponse{status: status, bytes: int64(len(msg))}, keep
}

// writeGatewayError writes a 502 or 504 answer; an answer to HEAD has no
// body (on a kept connection it would be read as the next answer).
func writeGatewayError(w headWriter, status int, msg string, keep, head bool) {
	if status == 504 {
		w.WriteString("HTTP/1.1 504 Gateway Timeout\r\n")
	} else {
		w.WriteString("HTTP/1.1 502 Bad Gateway\r\n")
	}
	w.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n")
	if !keep {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("Content-Length: ")
	w.WriteString(strconv.Itoa(len(msg)))
	w.WriteString("\r\n\r\n")
	if !head {
		w.WriteString(msg)
	}
}

// bytesString views b as a string without copying; the string must not
// outlive b's contents.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
