package ingress

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// The fast path's side of a container's response: the head parsed in
// place in the upstream connection's read buffer, passed on less its
// hop-by-hop fields, and the body copied by its framing.

// errRespHeadTooLarge: the fast path bounds a response head by the
// upstream connection's read buffer, as nginx's proxy_buffer_size does.
var errRespHeadTooLarge = errors.New("response head larger than 16 KiB")

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

// headWriter is where a head is written: the client's or container's
// bufio.Writer on the goroutine path, a loop buffer (sinkBuf) on the
// event loop's.
type headWriter interface {
	Write([]byte) (int, error)
	WriteString(string) (int, error)
	WriteByte(byte) error
}

// sinkBuf appends to a byte slice whose capacity the event loop keeps
// between requests.
type sinkBuf struct{ b []byte }

func (s *sinkBuf) Write(p []byte) (int, error)       { s.b = append(s.b, p...); return len(p), nil }
func (s *sinkBuf) WriteString(p string) (int, error) { s.b = append(s.b, p...); return len(p), nil }
func (s *sinkBuf) WriteByte(c byte) error            { s.b = append(s.b, c); return nil }

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
func writeRespHead(w headWriter, head []byte, r *respHead, closeClient bool) {
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
