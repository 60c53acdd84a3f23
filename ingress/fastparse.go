package ingress

import (
	"bytes"
)

// The fast path's request head parser. It parses in place, in the
// connection's own buffer, and allocates nothing: every field is a slice
// of that buffer. It only accepts the common shape (HTTP/1.1, origin-form
// target, Content-Length or no body); anything else is either rejected
// (malformed or ambiguous framing: a smuggling risk) or left to net/http,
// which then takes the whole connection.

const (
	// fastHeadBuf bounds a request head on the fast path; a larger head
	// goes to net/http, which bounds it by Config.MaxHeaderBytes.
	fastHeadBuf = 8 << 10
	// fastMaxHeaders bounds the header fields of a fast-path request;
	// more go to net/http.
	fastMaxHeaders = 64
)

type headerField struct{ name, value []byte }

// reqHead is one parsed request head; its slices point into the buffer
// it was parsed from.
type reqHead struct {
	method, target, host []byte
	fields               [fastMaxHeaders]headerField
	nfields              int
	contentLength        int64 // 0 when absent
	closeConn            bool  // Connection: close
	headLen              int   // bytes up to and including the blank line
}

type parseResult int

const (
	parseNeedMore parseResult = iota
	parseOK
	// parseFallback: not the fast path's shape; net/http takes over.
	parseFallback
	// parseBad: malformed or ambiguous; answered 400 and closed.
	parseBad
)

var (
	crlf     = []byte("\r\n")
	crlfcrlf = []byte("\r\n\r\n")
)

// parseHead parses the request head at the start of b. A bad request
// wins over one to fall back on, so that framing the fast path rejects
// (both Content-Length and Transfer-Encoding, conflicting lengths,
// obs-fold) is rejected whatever else the head carries.
func parseHead(b []byte, h *reqHead) (parseResult, string) {
	end := bytes.Index(b, crlfcrlf)
	if end < 0 {
		// Bare LF line ends are legal but odd: net/http's parser takes them.
		for i, c := range b {
			if c == '\n' && (i == 0 || b[i-1] != '\r') {
				return parseFallback, "bare LF"
			}
		}
		return parseNeedMore, ""
	}
	*h = reqHead{headLen: end + 4}
	head := b[:end+2]
	if head[0] == '\r' {
		return parseFallback, "empty line before the request line"
	}
	i := bytes.Index(head, crlf)
	line, rest := head[:i], head[i+2:]
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1 {
		return parseBad, "malformed request line"
	}
	h.method, h.target = line[:sp1], line[sp1+1:sp2]
	version := line[sp2+1:]
	if !isToken(h.method) {
		return parseBad, "malformed method"
	}
	for _, c := range h.target {
		if c <= ' ' || c == 0x7f {
			return parseBad, "control character or space in the request target"
		}
	}
	fallback := ""
	if string(version) != "HTTP/1.1" {
		fallback = "not HTTP/1.1"
	}
	if len(h.target) == 0 || h.target[0] != '/' {
		fallback = "not an origin-form target"
	}
	var hasCL, hasTE bool
	for len(rest) > 0 {
		i := bytes.Index(rest, crlf)
		line, rest = rest[:i], rest[i+2:]
		if line[0] == ' ' || line[0] == '\t' {
			return parseBad, "obs-fold (folded header line)"
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return parseBad, "malformed header name"
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range value {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return parseBad, "control character in a header value"
			}
		}
		keep := true
		switch {
		case eqFold(name, "host"):
			if h.host != nil {
				return parseBad, "two Host headers"
			}
			h.host = value
			if !validHost(value) {
				fallback = "unusual Host"
			}
		case eqFold(name, "content-length"):
			n, ok := parseDecimal(value)
			if !ok {
				return parseBad, "malformed Content-Length"
			}
			if hasCL && n != h.contentLength {
				return parseBad, "conflicting Content-Length headers"
			}
			hasCL, h.contentLength = true, n
		case eqFold(name, "transfer-encoding"):
			hasTE = true
			fallback = "Transfer-Encoding"
		case eqFold(name, "connection"):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				tok = trimOWS(tok)
				switch {
				case eqFold(tok, "close"):
					h.closeConn = true
				case eqFold(tok, "keep-alive"), len(tok) == 0:
				default:
					// upgrade, or a header named hop-by-hop
					fallback = "Connection option"
				}
			}
			keep = false
		case eqFold(name, "upgrade"), eqFold(name, "expect"):
			fallback = "upgrade or expect"
		case eqFold(name, "keep-alive"), eqFold(name, "proxy-connection"), eqFold(name, "te"),
			eqFold(name, "trailer"), eqFold(name, "proxy-authorization"),
			// Set by the ingress alone, as httputil.ProxyRequest.SetXForwarded does:
			// a client cannot forge them.
			eqFold(name, "x-forwarded-for"), eqFold(name, "x-forwarded-host"),
			eqFold(name, "x-forwarded-proto"), eqFold(name, "forwarded"):
			keep = false
		}
		if keep {
			if h.nfields == fastMaxHeaders {
				fallback = "too many header fields"
				continue
			}
			h.fields[h.nfields] = headerField{name, value}
			h.nfields++
		}
	}
	if hasCL && hasTE {
		return parseBad, "both Content-Length and Transfer-Encoding"
	}
	if h.host == nil && fallback == "" {
		fallback = "no Host"
	}
	if fallback != "" {
		return parseFallback, fallback
	}
	return parseOK, ""
}

// path is the target without its query.
func (h *reqHead) path() []byte {
	if i := bytes.IndexByte(h.target, '?'); i >= 0 {
		return h.target[:i]
	}
	return h.target
}

func (h *reqHead) isHead() bool { return string(h.method) == "HEAD" }

// replayable: a request the client would not mind being sent twice,
// as http.Transport decides it for a request without a body.
func (h *reqHead) replayable() bool {
	switch string(h.method) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

var tokenChars = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

// validHost accepts the usual host[:port] and [v6]:port characters; a
// Host header with anything else is net/http's to judge.
func validHost(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// eqFold compares b with lower, a lowercase ASCII string, ignoring case.
func eqFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// parseDecimal parses a Content-Length: digits only, at most 18 of them
// (no sign, no spaces, no overflow).
func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseHex parses a chunk size: hex digits only, at most 15 of them.
func parseHex(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		n = n<<4 | int64(c)
	}
	return n, true
}
