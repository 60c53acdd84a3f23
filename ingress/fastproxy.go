package ingress

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
// that was not answered yet.

// fastResponse is what the exchange reports for metrics and the log.
type fastResponse struct {
	status int
	bytes  int64
}

// errRespHeadTooLarge: the fast path bounds a response head by the
// upstream connection's read buffer, as nginx's proxy_buffer_size does.
var errRespHeadTooLarge = errors.New("response head larger than 16 KiB")

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
		return c.badGateway(fmt.Sprintf("502 bad gateway: service %s has no running container this machine can reach\n", rt.Service), bodyless), bodyless
	}
	for {
		resp, keep, sent, err := c.try(b)
		if err == nil {
			return resp, keep
		}
		var de *dialError
		retry := errors.As(err, &de) || (bodyless && !sent)
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
			return resp, false
		}
		f.log.Warn("upstream failed", "host", string(h.host), "service", rt.Service, "err", err)
		// The connection carries another request only if this one's
		// body is wholly read: the rest of a body must never be taken
		// for the next request.
		ok := bodyless || (errors.As(err, &de) && c.n >= h.headLen+int(h.contentLength))
		return c.badGateway(fmt.Sprintf("502 bad gateway: service %s did not answer\n", rt.Service), ok), ok
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
	for informational := 0; ; informational++ {
		if head, err = peekHead(br); err != nil {
			return resp, false, sent, fmt.Errorf("read response from %s: %w", uc.addr, err)
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

// consumed drops the finished request from buf, keeping any pipelined
// bytes after it.
func (c *fastConn) consumed() {
	used := c.head.headLen + int(c.head.contentLength)
	if used >= c.n {
		c.n = 0
		return
	}
	c.n = copy(c.buf, c.buf[used:c.n])
}

// writeRequest writes the head and the body to the container.
func (c *fastConn) writeRequest(uc *upConn) error {
	h := &c.head
	w := uc.bw
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
	w.WriteString(c.clientIP)
	w.WriteString("\r\nX-Forwarded-Host: ")
	w.Write(h.host)
	if c.https {
		w.WriteString("\r\nX-Forwarded-Proto: https\r\n\r\n")
	} else {
		w.WriteString("\r\nX-Forwarded-Proto: http\r\n\r\n")
	}
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

// badGateway answers 502.
func (c *fastConn) badGateway(msg string, keep bool) fastResponse {
	c.bw.WriteString("HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n")
	if !keep {
		c.bw.WriteString("Connection: close\r\n")
	}
	c.bw.WriteString("Content-Length: ")
	c.bw.WriteString(strconv.Itoa(len(msg)))
	c.bw.WriteString("\r\n\r\n")
	c.bw.WriteString(msg)
	c.bw.Flush()
	if keep {
		c.consumed()
	}
	return fastResponse{status: 502, bytes: int64(len(msg))}
}

// peekHead waits until br holds a whole response head and returns it,
// still buffered.
func peekHead(br *bufio.Reader) ([]byte, error) {
	scanned := 0
	for {
		p, _ := br.Peek(br.Buffered())
		if i := bytes.Index(p[max(0, scanned-3):], crlfcrlf); i >= 0 {
			return p[:max(0, scanned-3)+i+4], nil
		}
		if len(p) == br.Size() {
			return nil, errRespHeadTooLarge
		}
		scanned = len(p)
		if _, err := br.Peek(len(p) + 1); err != nil {
			if len(p) == 0 && errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			if errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// respHead is a parsed response head.
type respHead struct {
	status        int
	contentLength int64 // -1: none
	chunked       bool
	closeConn     bool // the container closes after this response
	// connTokens are the header names the Connection field lists, which
	// must not be passed on.
	connTokens [][]byte
	tokenArr   [4][]byte
}

var errBadResponse = errors.New("malformed response head")

func parseRespHead(head []byte, r *respHead) error {
	*r = respHead{contentLength: -1}
	r.connTokens = r.tokenArr[:0]
	i := bytes.Index(head, crlf)
	line := head[:i]
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return fmt.Errorf("%w: status line %q", errBadResponse, line[:min(len(line), 40)])
	}
	code, ok := parseDecimal(line[9:12])
	if !ok || code < 100 {
		return fmt.Errorf("%w: status %q", errBadResponse, line[9:12])
	}
	r.status = int(code)
	http10 := line[7] == '0'
	r.closeConn = http10 // HTTP/1.0 closes unless asked otherwise
	rest := head[i+2 : len(head)-2]
	hasTE := false
	for len(rest) > 0 {
		i := bytes.Index(rest, crlf)
		line, rest = rest[:i], rest[i+2:]
		if line[0] == ' ' || line[0] == '\t' {
			return fmt.Errorf("%w: folded header line", errBadResponse)
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return fmt.Errorf("%w: header name", errBadResponse)
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		switch {
		case eqFold(name, "content-length"):
			n, ok := parseDecimal(value)
			if !ok || (r.contentLength >= 0 && n != r.contentLength) {
				return fmt.Errorf("%w: Content-Length %q", errBadResponse, value)
			}
			r.contentLength = n
		case eqFold(name, "transfer-encoding"):
			hasTE = true
			// chunked last: chunked framing; otherwise the body runs
			// until the container closes.
			v := trimOWS(value)
			r.chunked = len(v) >= 7 && eqFold(v[len(v)-7:], "chunked")
		case eqFold(name, "connection"):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				tok = trimOWS(tok)
				if eqFold(tok, "close") {
					r.closeConn = true
				} else if eqFold(tok, "keep-alive") {
					if http10 {
						r.closeConn = false
					}
				} else if len(tok) > 0 && len(r.connTokens) < 16 {
					r.connTokens = append(r.connTokens, tok)
				}
			}
		}
	}
	if hasTE {
		r.contentLength = -1 // Transfer-Encoding overrides, and Content-Length is not passed on
		if !r.chunked {
			r.closeConn = true
		}
	}
	return nil
}

// writeRespHead writes the response head to the client: the status line
// as HTTP/1.1, the fields less hop-by-hop ones.
func writeRespHead(w *bufio.Writer, head []byte, r *respHead, closeClient bool) {
	i := bytes.Index(head, crlf)
	w.WriteString("HTTP/1.1")
	w.Write(head[8:i]) // " 200 OK"
	w.WriteString("\r\n")
	rest := head[i+2 : len(head)-2]
	for len(rest) > 0 {
		i := bytes.Index(rest, crlf)
		line := rest[:i]
		rest = rest[i+2:]
		name := line[:bytes.IndexByte(line, ':')]
		if hopByHopResponse(name, r) {
			continue
		}
		w.Write(line)
		w.WriteString("\r\n")
	}
	if closeClient {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
}

func hopByHopResponse(name []byte, r *respHead) bool {
	switch {
	case eqFold(name, "connection"), eqFold(name, "keep-alive"), eqFold(name, "proxy-connection"),
		eqFold(name, "proxy-authenticate"), eqFold(name, "upgrade"):
		return true
	case eqFold(name, "content-length"):
		return r.contentLength < 0 // dropped under Transfer-Encoding
	case eqFold(name, "transfer-encoding"):
		return !r.chunked // passed through only with the chunked framing it describes
	}
	for _, t := range r.connTokens {
		if bytes.EqualFold(name, t) && !eqFold(t, "transfer-encoding") && !eqFold(t, "content-length") {
			return true
		}
	}
	return false
}

// copyN copies n bytes (n < 0: until EOF) from br to w, flushing w before
// each wait for the container so a streamed response moves on.
func copyN(w *bufio.Writer, br *bufio.Reader, n int64) (int64, error) {
	var done int64
	for n < 0 || done < n {
		k := br.Buffered()
		if k == 0 {
			if w.Buffered() > 0 {
				if err := w.Flush(); err != nil {
					return done, err
				}
			}
			if _, err := br.Peek(1); err != nil {
				if n < 0 && errors.Is(err, io.EOF) {
					return done, nil
				}
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return done, fmt.Errorf("read response body: %w", err)
			}
			k = br.Buffered()
		}
		if n >= 0 && int64(k) > n-done {
			k = int(n - done)
		}
		p, _ := br.Peek(k)
		if _, err := w.Write(p); err != nil {
			return done, err
		}
		br.Discard(k)
		done += int64(k)
	}
	return done, nil
}

// copyChunked passes a chunked body through as it is, parsing its
// framing to find its end (the last chunk and the trailer section).
func copyChunked(w *bufio.Writer, br *bufio.Reader) (int64, error) {
	var total int64
	for {
		line, err := readLine(w, br)
		if err != nil {
			return total, err
		}
		w.Write(line)
		sz := trimOWS(bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r")))
		if i := bytes.IndexByte(sz, ';'); i >= 0 {
			sz = trimOWS(sz[:i])
		}
		n, ok := parseHex(sz)
		if !ok {
			return total, fmt.Errorf("read response body: chunk size %q", sz)
		}
		if n == 0 {
			// Trailer fields, then the blank line.
			for {
				line, err := readLine(w, br)
				if err != nil {
					return total, err
				}
				w.Write(line)
				if len(line) <= 2 && (string(line) == "\r\n" || string(line) == "\n") {
					return total, nil
				}
			}
		}
		if _, err := copyN(w, br, n); err != nil {
			return total, err
		}
		total += n
		end, err := readLine(w, br)
		if err != nil {
			return total, err
		}
		if string(end) != "\r\n" && string(end) != "\n" {
			return total, errors.New("read response body: chunk not followed by CRLF")
		}
		w.Write(end)
	}
}

// readLine returns the next line of br, bounded by its buffer, flushing
// w first when it has to wait.
func readLine(w *bufio.Writer, br *bufio.Reader) ([]byte, error) {
	if bytes.IndexByte(peekBuffered(br), '\n') < 0 && w.Buffered() > 0 {
		if err := w.Flush(); err != nil {
			return nil, err
		}
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read response body: chunk framing: %w", err)
	}
	return line, nil
}

func peekBuffered(br *bufio.Reader) []byte {
	p, _ := br.Peek(br.Buffered())
	return p
}

// bytesString views b as a string without copying; the string must not
// outlive b's contents.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
