package ingress

import (
	"strings"
	"testing"
)

func TestParseHead(t *testing.T) {
	many := "GET / HTTP/1.1\r\nHost: a.test\r\n" + strings.Repeat("X-A: b\r\n", fastMaxHeaders) + "\r\n"
	for _, tc := range []struct {
		name, in string
		want     parseResult
	}{
		{"plain GET", "GET /a?b=c HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n\r\n", parseOK},
		{"POST with length", "POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello", parseOK},
		{"same length twice", "POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", parseOK},
		{"connection close", "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", parseOK},
		{"head incomplete", "GET / HTTP/1.1\r\nHost: a.te", parseNeedMore},
		{"blank line incomplete", "GET / HTTP/1.1\r\nHost: a.test\r\n\r", parseNeedMore},

		// Smuggling and malformed framing: rejected outright.
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", parseBad},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", parseBad},
		{"CL and TE with an upgrade", "POST / HTTP/1.1\r\nHost: a.test\r\nUpgrade: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", parseBad},
		{"conflicting lengths", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", parseBad},
		{"length list", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4, 4\r\n\r\n", parseBad},
		{"signed length", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: +4\r\n\r\n", parseBad},
		{"hex length", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0x4\r\n\r\n", parseBad},
		{"overflowing length", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 99999999999999999999\r\n\r\n", parseBad},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: b\r\n c\r\n\r\n", parseBad},
		{"obs-fold with tab", "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: b\r\n\tc\r\n\r\n", parseBad},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length : 4\r\n\r\n", parseBad},
		{"no colon", "GET / HTTP/1.1\r\nHost: a.test\r\nnocolon\r\n\r\n", parseBad},
		{"empty name", "GET / HTTP/1.1\r\nHost: a.test\r\n: x\r\n\r\n", parseBad},
		{"control character", "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: b\x00c\r\n\r\n", parseBad},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a.test\r\nX-A: b\rc\r\n\r\n", parseBad},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", parseBad},
		{"garbage", "HELLO\r\n\r\n", parseBad},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a.test\r\n\r\n", parseBad},
		{"bad method", "G(T / HTTP/1.1\r\nHost: a.test\r\n\r\n", parseBad},

		// Legal but not the fast path's: net/http takes the connection.
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: a.test\r\n\r\n", parseFallback},
		{"unknown version", "GET / HTTP/9.9\r\nHost: a.test\r\n\r\n", parseFallback},
		{"absolute form", "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", parseFallback},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n", parseFallback},
		{"chunked upload", "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n", parseFallback},
		{"websocket", "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", parseFallback},
		{"expect", "PUT / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n", parseFallback},
		{"hop-by-hop named", "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: X-Secret\r\n\r\n", parseFallback},
		{"no host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", parseFallback},
		{"odd host", "GET / HTTP/1.1\r\nHost: a test\r\n\r\n", parseFallback},
		{"bare LF", "GET / HTTP/1.1\nHost: a.test\n\n", parseFallback},
		{"leading blank line", "\r\nGET / HTTP/1.1\r\nHost: a.test\r\n\r\n", parseFallback},
		{"too many fields", many, parseFallback},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h reqHead
			got, why := parseHead([]byte(tc.in), &h)
			if got != tc.want {
				t.Fatalf("parseHead = %d (%s), want %d", got, why, tc.want)
			}
		})
	}
}

func TestParseHeadFields(t *testing.T) {
	in := "POST /p?q=1 HTTP/1.1\r\nhost: App.Test:8080\r\nContent-Length: 3\r\nX-Forwarded-For: 6.6.6.6\r\n" +
		"Forwarded: for=6.6.6.6\r\nConnection: keep-alive, close\r\nKeep-Alive: 5\r\nProxy-Authorization: x\r\n" +
		"TE: trailers\r\nX-Real:  v  \r\n\r\nabc"
	var h reqHead
	if res, why := parseHead([]byte(in), &h); res != parseOK {
		t.Fatalf("parseHead = %d (%s)", res, why)
	}
	if string(h.method) != "POST" || string(h.target) != "/p?q=1" || string(h.path()) != "/p" ||
		string(h.host) != "App.Test:8080" || h.contentLength != 3 || !h.closeConn || h.headLen != len(in)-3 {
		t.Fatalf("parsed %+v", h)
	}
	var names []string
	for _, f := range h.fields[:h.nfields] {
		names = append(names, string(f.name)+"="+string(f.value))
	}
	// Hop-by-hop and X-Forwarded-*/Forwarded fields are not passed on:
	// the ingress sets its own.
	if got, want := strings.Join(names, ","), "host=App.Test:8080,Content-Length=3,X-Real=v"; got != want {
		t.Fatalf("fields %s, want %s", got, want)
	}
}

// The parser allocates nothing: it runs once per request.
func TestParseHeadAllocs(t *testing.T) {
	b := []byte("GET /a?b=c HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\nUser-Agent: x\r\n\r\n")
	var h reqHead
	if n := testing.AllocsPerRun(100, func() { parseHead(b, &h) }); n != 0 {
		t.Fatalf("%v allocations per parse", n)
	}
}

func TestParseRespHead(t *testing.T) {
	for _, tc := range []struct {
		name, in    string
		status      int
		length      int64
		chunked, cl bool
		bad         bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200, 5, false, false, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 200, -1, true, false, false},
		{"chunked wins over length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 200, -1, true, false, false},
		{"until close", "HTTP/1.1 200 OK\r\n\r\n", 200, -1, false, false, false},
		{"gzip only: until close", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 200, -1, false, true, false},
		{"close", "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", 204, -1, false, true, false},
		{"1.0 closes", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200, 0, false, true, false},
		{"1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 200, 0, false, false, false},
		{"no reason", "HTTP/1.1 304\r\n\r\n", 304, -1, false, false, false},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 0, 0, false, false, true},
		{"folded", "HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n\r\n", 0, 0, false, false, true},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", 0, 0, false, false, true},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", 0, 0, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r respHead
			err := parseRespHead([]byte(tc.in), &r)
			if tc.bad {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil || r.status != tc.status || r.contentLength != tc.length || r.chunked != tc.chunked || r.closeConn != tc.cl {
				t.Fatalf("got %+v, %v", r, err)
			}
		})
	}
}
