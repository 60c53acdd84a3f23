package ingress

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
)

// rawBackend is a container speaking HTTP/1.1 by hand, so that a test
// can send exactly the framing it wants (chunks, close, 1xx, no body).
// Its answer to a request is chosen by the request's path.
type rawBackend struct {
	accepted atomic.Int64
	seen     chan string // each request head, as the container got it
}

func startRawBackend(t *testing.T, ip string, port int, answer func(path string, body []byte) (resp string, closeAfter bool)) *rawBackend {
	t.Helper()
	b := &rawBackend{seen: make(chan string, 100)}
	serveTestConns(t, ip, port, &b.accepted, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			var head strings.Builder
			length := 0
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
				if line == "\r\n" {
					break
				}
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "content-length") {
					length, _ = strconv.Atoi(strings.TrimSpace(v))
				}
			}
			body := make([]byte, length)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			select {
			case b.seen <- head.String():
			default:
			}
			fields := strings.Fields(head.String())
			if len(fields) < 2 {
				return
			}
			path, _, _ := strings.Cut(fields[1], "?")
			resp, closeAfter := answer(path, body)
			if _, err := io.WriteString(c, resp); err != nil || closeAfter {
				return
			}
		}
	})
	return b
}

// serveTestConns listens on ip:port for the test's life and serves each
// connection it accepts in a goroutine of its own, counting them.
func serveTestConns(t *testing.T, ip string, port int, accepted *atomic.Int64, serve func(c net.Conn)) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	serveTestListener(t, ln, accepted, serve)
}

// serveTestListener is serveTestConns on a listener of the test's.
func serveTestListener(t *testing.T, ln net.Listener, accepted *atomic.Int64, serve func(c net.Conn)) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
}

func rawAnswer(path string, body []byte) (string, bool) {
	switch path {
	case "/chunked":
		return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Sum: 12\r\n\r\n", false
	case "/close":
		return "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 6\r\n\r\nclosed", true
	case "/drop":
		// Closes the connection it kept alive, without saying so.
		return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndrop", true
	case "/untilclose":
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstreamed to the end", true
	case "/head":
		return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false // HEAD: no body follows
	case "/204":
		return "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n", false
	case "/304":
		return "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", false
	case "/hints":
		return "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	case "/hop":
		return "HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok", false
	case "/echo":
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body), false
	case "/big":
		big := strings.Repeat("x", 300<<10)
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big, false
	}
	return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
}

// rawClient is one keep-alive client connection to the ingress.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawClient{t: t, c: c, br: bufio.NewReader(c)}
}

// do sends raw and reads one response, its body and trailers whole.
func (r *rawClient) do(method, raw string) (*http.Response, string) {
	r.t.Helper()
	if raw != "" {
		if _, err := io.WriteString(r.c, raw); err != nil {
			r.t.Fatal(err)
		}
	}
	return r.read(method)
}

func (r *rawClient) read(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		r.t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

// closed reports whether the ingress closed the connection.
func (r *rawClient) closed() bool {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := r.br.ReadByte()
	return err == io.EOF
}

// fastPaths are the two ways the fast path serves plain HTTP: the epoll
// loops (the default on linux) and a goroutine per connection.
var fastPaths = []struct {
	name string
	mod  func(*Config)
}{
	{"loop", nil},
	{"goroutine", func(c *Config) { c.NoEventLoop = true }},
}

// bothPaths runs test on each of fastPaths.
func bothPaths(t *testing.T, test func(t *testing.T, mod func(*Config))) {
	for _, p := range fastPaths {
		t.Run(p.name, func(t *testing.T) { test(t, p.mod) })
	}
}

func fastSetup(t *testing.T, mod func(*Config)) (*Ingress, *rawBackend) {
	st := openStore(t)
	in := startIngress(t, st, mod)
	port := freePort(t)
	b := startRawBackend(t, "127.0.0.2", port, rawAnswer)
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/http", port)}})
	put(t, st, container("c1", "web", "127.0.0.2"))
	eventually(t, "route", func() bool {
		resp, _, err := get(t, noRedirect, in, "app.test", "/")
		return err == nil && resp.StatusCode == 200
	})
	return in, b
}

func req(method, path, extra string) string {
	return method + " " + path + " HTTP/1.1\r\nHost: app.test\r\n" + extra + "\r\n"
}

// TestFastPathExchanges runs every kind of exchange on one client
// connection: each must leave it usable for the next.
func TestFastPathExchanges(t *testing.T) { bothPaths(t, testFastPathExchanges) }

func testFastPathExchanges(t *testing.T, mod func(*Config)) {
	in, b := fastSetup(t, mod)
	c := dialRaw(t, in.HTTPAddr().String())
	// A first request, so that the container connection counted below
	// is this client's: the event loops keep container connections per
	// loop, and the setup's client may have been on another.
	if resp, _ := c.do("GET", req("GET", "/", "")); resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	before := b.accepted.Load()

	for _, tc := range []struct {
		name, method, path, extra string
		status                    int
		body                      string
		check                     func(*http.Response) string
	}{
		{"keep-alive 1", "GET", "/", "", 200, "ok", nil},
		{"keep-alive 2", "GET", "/", "", 200, "ok", nil},
		{"chunked", "GET", "/chunked", "", 200, "hello, world", func(r *http.Response) string {
			if r.Trailer.Get("X-Sum") != "12" {
				return "trailer lost: " + fmt.Sprint(r.Trailer)
			}
			return ""
		}},
		{"HEAD", "HEAD", "/head", "", 200, "", func(r *http.Response) string {
			if r.ContentLength != 5 {
				return "HEAD's Content-Length not passed on"
			}
			return ""
		}},
		{"204", "GET", "/204", "", 204, "", func(r *http.Response) string {
			if r.Header.Get("X-A") != "b" {
				return "header lost"
			}
			return ""
		}},
		{"304", "GET", "/304", "", 304, "", nil},
		{"103 then 200", "GET", "/hints", "", 103, "", nil},
		{"hop-by-hop response fields", "GET", "/hop", "", 200, "ok", func(r *http.Response) string {
			if r.Header.Get("X-Private") != "" || r.Header.Get("Keep-Alive") != "" {
				return "hop-by-hop fields passed on: " + fmt.Sprint(r.Header)
			}
			return ""
		}},
		{"body", "POST", "/echo", "Content-Length: 5\r\n", 200, "hello", nil},
		{"big response", "GET", "/big", "", 200, strings.Repeat("x", 300<<10), nil},
		{"backend closes", "GET", "/close", "", 200, "closed", nil},
		{"after backend close", "GET", "/", "", 200, "ok", nil},
		{"container drops its kept connection", "GET", "/drop", "", 200, "drop", nil},
		{"on a stale kept connection: sent again", "GET", "/", "", 200, "ok", nil},
	} {
		raw := req(tc.method, tc.path, tc.extra)
		if tc.method == "POST" {
			raw += "hello"
		}
		resp, body := c.do(tc.method, raw)
		if tc.status == 103 {
			// The early hints, then the answer.
			if resp.StatusCode != 103 || resp.Header.Get("Link") == "" {
				t.Fatalf("%s: got %d %v", tc.name, resp.StatusCode, resp.Header)
			}
			resp, body = c.read(tc.method)
			tc.status, tc.body = 200, "ok"
		}
		if resp.StatusCode != tc.status || body != tc.body {
			t.Fatalf("%s: got %d %.40q, want %d %.40q", tc.name, resp.StatusCode, body, tc.status, tc.body)
		}
		if resp.Close {
			t.Fatalf("%s: the ingress closes the client connection", tc.name)
		}
		if tc.check != nil {
			if msg := tc.check(resp); msg != "" {
				t.Fatalf("%s: %s", tc.name, msg)
			}
		}
	}
	// The kept connection of the setup's request carried all until the
	// container closed it, then one more until it dropped that, then one.
	if n := b.accepted.Load() - before; n != 2 {
		t.Fatalf("container accepted %d connections for one keep-alive client, want 2", n)
	}

	// A body without framing runs to the container's close: the client
	// is told the connection closes after it.
	resp, body := c.do("GET", req("GET", "/untilclose", ""))
	if body != "streamed to the end" || !resp.Close || !c.closed() {
		t.Fatalf("until-close response: %q close=%v", body, resp.Close)
	}
}

// TestFastPathRequestForwarding checks what the container receives.
func TestFastPathRequestForwarding(t *testing.T) { bothPaths(t, testFastPathRequestForwarding) }

func testFastPathRequestForwarding(t *testing.T, mod func(*Config)) {
	in, b := fastSetup(t, mod)
	for len(b.seen) > 0 {
		<-b.seen
	}
	c := dialRaw(t, in.HTTPAddr().String())
	big := strings.Repeat("b", 100<<10) // larger than the head buffer
	resp, body := c.do("POST", "POST /echo?x=1 HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 6.6.6.6\r\n"+
		"X-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\nConnection: keep-alive\r\nKeep-Alive: 10\r\n"+
		"Proxy-Authorization: Basic x\r\nX-App: 1\r\nContent-Length: "+strconv.Itoa(len(big))+"\r\n\r\n"+big)
	if resp.StatusCode != 200 || body != big {
		t.Fatalf("echo: %d, %d bytes", resp.StatusCode, len(body))
	}
	head := <-b.seen
	for _, want := range []string{"POST /echo?x=1 HTTP/1.1\r\n", "\r\nHost: app.test\r\n", "\r\nX-App: 1\r\n",
		"\r\nX-Forwarded-For: 127.0.0.1\r\n", "\r\nX-Forwarded-Host: app.test\r\n", "\r\nX-Forwarded-Proto: http\r\n"} {
		if !strings.Contains(head, want) {
			t.Errorf("container's request lacks %q:\n%s", want, head)
		}
	}
	for _, bad := range []string{"6.6.6.6", "https", "Keep-Alive", "Proxy-Authorization", "Connection"} {
		if strings.Contains(head, bad) {
			t.Errorf("container's request carries %q:\n%s", bad, head)
		}
	}

	// Two pipelined requests are answered in order.
	io.WriteString(c.c, req("GET", "/echo", "Content-Length: 3\r\n")+"one"+req("GET", "/echo", "Content-Length: 3\r\n")+"two")
	if _, b1 := c.read("GET"); b1 != "one" {
		t.Fatalf("first pipelined: %q", b1)
	}
	if _, b2 := c.read("GET"); b2 != "two" {
		t.Fatalf("second pipelined: %q", b2)
	}

	// Connection: close from the client is honoured.
	resp, _ = c.do("GET", req("GET", "/", "Connection: close\r\n"))
	if !resp.Close || !c.closed() {
		t.Fatal("client's Connection: close not honoured")
	}
}

// TestFastPathRejects: ambiguous framing is answered 400 and the
// connection closed, before anything reaches a container.
func TestFastPathRejects(t *testing.T) { bothPaths(t, testFastPathRejects) }

func testFastPathRejects(t *testing.T, mod func(*Config)) {
	in, b := fastSetup(t, mod)
	for len(b.seen) > 0 {
		<-b.seen
	}
	for _, tc := range []struct{ name, raw string }{
		{"CL and TE", "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"conflicting lengths", "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 3\r\n\r\nhello"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: app.test\r\nX-A: b\r\n c\r\n\r\n"},
	} {
		c := dialRaw(t, in.HTTPAddr().String())
		// A good request first: the bad one comes on a fast-path connection.
		if resp, _ := c.do("GET", req("GET", "/", "")); resp.StatusCode != 200 {
			t.Fatalf("%s: first request %d", tc.name, resp.StatusCode)
		}
		<-b.seen
		resp, _ := c.do("POST", tc.raw)
		if resp.StatusCode != 400 || !c.closed() {
			t.Fatalf("%s: %d, want 400 and close", tc.name, resp.StatusCode)
		}
		select {
		case h := <-b.seen:
			t.Fatalf("%s reached the container:\n%s", tc.name, h)
		default:
		}
	}
}

// TestFastPathHandsOver: a connection whose later request is not the
// fast path's continues in net/http, TLS included.
func TestFastPathHandsOver(t *testing.T) {
	st := openStore(t)
	cert, pool := selfSigned(t, "app.test")
	in := startIngress(t, st, func(c *Config) { c.Certificates = []tls.Certificate{cert}; c.ACME.Disable = true })
	port := freePort(t)
	b := startBackend(t, "127.0.0.2", port, "ok", nil)
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/https", port)}})
	put(t, st, container("c1", "web", "127.0.0.2"))
	tc, err := tls.Dial("tcp", in.HTTPSAddr().String(), &tls.Config{RootCAs: pool, ServerName: "app.test", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	c := &rawClient{t: t, c: tc, br: bufio.NewReader(tc)}
	eventually(t, "route", func() bool {
		resp, _ := c.do("GET", req("GET", "/", ""))
		return resp.StatusCode == 200
	})
	for len(b.seen) > 0 {
		<-b.seen
	}
	// Expect: 100-continue is net/http's; the next request stays there.
	resp, body := c.do("POST", req("POST", "/", "Content-Length: 2\r\nExpect: 100-continue\r\n")+"hi")
	if resp.StatusCode == 100 {
		resp, body = c.read("POST")
	}
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("after hand-over: %d %q", resp.StatusCode, body)
	}
	r := <-b.seen
	if r.Header.Get("X-Forwarded-Proto") != "https" {
		t.Fatalf("handed-over TLS request forwarded as %q", r.Header.Get("X-Forwarded-Proto"))
	}
	resp, _ = c.do("GET", req("GET", "/", ""))
	if resp.StatusCode != 200 {
		t.Fatalf("second request after hand-over: %d", resp.StatusCode)
	}

	// Plain HTTP to the https route's host: net/http's redirect.
	pc := dialRaw(t, in.HTTPAddr().String())
	resp, _ = pc.do("GET", req("GET", "/x", ""))
	if resp.StatusCode != http.StatusPermanentRedirect {
		t.Fatalf("http to an https route: %d", resp.StatusCode)
	}
}

// TestFastPathNoContainerAnswers: a 502 keeps the client connection only
// when the request's body was wholly read, so that the rest of a body is
// never taken for a request.
func TestFastPathNoContainerAnswers(t *testing.T) { bothPaths(t, testFastPathNoContainerAnswers) }

func testFastPathNoContainerAnswers(t *testing.T, mod func(*Config)) {
	st := openStore(t)
	in := startIngress(t, st, mod)
	port := freePort(t)
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/http", port)}})
	put(t, st, container("c3", "web", "127.0.0.3")) // nothing listens there
	eventually(t, "route", func() bool {
		r := in.table.Load().lookup("app.test", "/")
		return r != nil && len(r.Backends) == 1
	})
	c := dialRaw(t, in.HTTPAddr().String())
	resp, body := c.do("GET", req("GET", "/", ""))
	if resp.StatusCode != 502 || !strings.Contains(body, "service web did not answer") || resp.Close {
		t.Fatalf("GET: %d %q close=%v, want 502 kept", resp.StatusCode, body, resp.Close)
	}
	resp, _ = c.do("POST", req("POST", "/", "Content-Length: 5\r\n")+"hello")
	if resp.StatusCode != 502 || resp.Close {
		t.Fatalf("POST with its body read: %d close=%v, want 502 kept", resp.StatusCode, resp.Close)
	}
	// The body's rest, a request of its own, is still to come: closed.
	smuggled := req("GET", "/admin", "")
	resp, _ = c.do("POST", req("POST", "/", "Content-Length: "+strconv.Itoa(10+len(smuggled))+"\r\n")+"0123456789")
	if resp.StatusCode != 502 || !resp.Close || !c.closed() {
		t.Fatalf("POST with body unread: %d close=%v, want 502 and close", resp.StatusCode, resp.Close)
	}
}
