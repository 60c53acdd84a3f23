package ingress

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
)

// scriptBackend is a container whose answers a test writes itself on the
// connection (slowly, cut short, by parts).
type scriptBackend struct {
	accepted atomic.Int64
	closed   chan struct{} // one per connection the ingress closed
}

func startScriptBackend(t *testing.T, ip string, port int, answer func(c net.Conn, r *http.Request) (keep bool)) *scriptBackend {
	t.Helper()
	b := &scriptBackend{closed: make(chan struct{}, 1000)}
	serveTestConns(t, ip, port, &b.accepted, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				if err == io.EOF {
					b.closed <- struct{}{}
				}
				return
			}
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if !answer(c, r) {
				return
			}
		}
	})
	return b
}

// loopSetup is an ingress on the event loops with one route, app.test, to
// the containers at ports on 127.0.0.2 (the first) and 127.0.0.3.
func loopSetup(t *testing.T, mod func(*Config), ports ...int) *Ingress {
	st := openStore(t)
	in := startIngress(t, st, mod)
	if in.fast[0].ev == nil {
		t.Fatal("plain HTTP is not on the event loops")
	}
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/http", ports[0])}})
	for i := range ports {
		put(t, st, container(fmt.Sprintf("c%d", i+1), "web", fmt.Sprintf("127.0.0.%d", i+2)))
	}
	eventually(t, "route", func() bool {
		r := in.table.Load().lookup("app.test", "/")
		return r != nil && len(r.Backends) == len(ports)
	})
	return in
}

func writeAnswer(c net.Conn, body string) bool {
	_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	return err == nil
}

// TestEventLoop runs the loop's exchanges, each on its own ingress.
func TestEventLoop(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 4<<20/16) // 4 MiB
	writeFailed := make(chan struct{}, 1)
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		// containers: the script of each (nil: nothing listens there).
		containers []func(c net.Conn, r *http.Request) bool
		run        func(t *testing.T, in *Ingress, bs []*scriptBackend)
		// loop: the requests the loops must have answered themselves.
		loop uint64
	}{
		{name: "keep-alive, many requests", loop: 200,
			containers: []func(net.Conn, *http.Request) bool{func(c net.Conn, r *http.Request) bool {
				return writeAnswer(c, r.URL.Path)
			}},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				c := dialRaw(t, in.HTTPAddr().String())
				for i := range 200 {
					p := "/r" + strconv.Itoa(i)
					resp, body := c.do("GET", req("GET", p, ""))
					if resp.StatusCode != 200 || body != p || resp.Close {
						t.Fatalf("request %d: %d %q close=%v", i, resp.StatusCode, body, resp.Close)
					}
				}
				if n := bs[0].accepted.Load(); n != 1 {
					t.Fatalf("container accepted %d connections, want 1 kept", n)
				}
			}},
		{name: "pipelined", loop: 20,
			containers: []func(net.Conn, *http.Request) bool{func(c net.Conn, r *http.Request) bool {
				return writeAnswer(c, r.URL.Path)
			}},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				c := dialRaw(t, in.HTTPAddr().String())
				var all strings.Builder
				for i := range 20 {
					all.WriteString(req("GET", "/p"+strconv.Itoa(i), ""))
				}
				io.WriteString(c.c, all.String())
				for i := range 20 {
					resp, body := c.read("GET")
					if resp.StatusCode != 200 || body != "/p"+strconv.Itoa(i) {
						t.Fatalf("pipelined %d: %d %q", i, resp.StatusCode, body)
					}
				}
			}},
		{name: "large response to a slow reader", loop: 2,
			containers: []func(net.Conn, *http.Request) bool{func(c net.Conn, r *http.Request) bool {
				return writeAnswer(c, big)
			}},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				c := dialRaw(t, in.HTTPAddr().String())
				io.WriteString(c.c, req("GET", "/big", ""))
				// Read nothing for a while: the loop must wait for the
				// client's socket (EPOLLOUT), not drop or spin.
				time.Sleep(300 * time.Millisecond)
				resp, err := http.ReadResponse(c.br, nil)
				if err != nil {
					t.Fatal(err)
				}
				var got bytes.Buffer
				buf := make([]byte, 64<<10)
				for i := 0; ; i++ {
					n, err := resp.Body.Read(buf)
					got.Write(buf[:n])
					if err != nil {
						break
					}
					if i < 20 {
						time.Sleep(5 * time.Millisecond)
					}
				}
				if got.String() != big {
					t.Fatalf("got %d bytes, want %d, equal=%v", got.Len(), len(big), got.String() == big)
				}
				resp, body := c.do("GET", req("GET", "/big", ""))
				if resp.StatusCode != 200 || body != big {
					t.Fatalf("second: %d, %d bytes", resp.StatusCode, len(body))
				}
			}},
		{name: "chunked response in many writes", loop: 2,
			containers: []func(net.Conn, *http.Request) bool{func(c net.Conn, r *http.Request) bool {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
				for i := 1; i <= 300; i++ {
					chunk := strings.Repeat(string(rune('a'+i%26)), i*37)
					fmt.Fprintf(c, "%x\r\n%s\r\n", len(chunk), chunk)
					if i%50 == 0 {
						time.Sleep(2 * time.Millisecond)
					}
				}
				io.WriteString(c, "0\r\nX-T: 1\r\n\r\n")
				return true
			}},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				var want strings.Builder
				for i := 1; i <= 300; i++ {
					want.WriteString(strings.Repeat(string(rune('a'+i%26)), i*37))
				}
				c := dialRaw(t, in.HTTPAddr().String())
				for range 2 {
					resp, body := c.do("GET", req("GET", "/", ""))
					if resp.StatusCode != 200 || body != want.String() || resp.Trailer.Get("X-T") != "1" {
						t.Fatalf("%d, %d bytes, trailer %v", resp.StatusCode, len(body), resp.Trailer)
					}
				}
			}},
		{name: "until-close response", loop: 1,
			containers: []func(net.Conn, *http.Request) bool{func(c net.Conn, r *http.Request) bool {
				io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nto the end")
				return false
			}},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				c := dialRaw(t, in.HTTPAddr().String())
				resp, body := c.do("GET", req("GET", "/", ""))
				if resp.StatusCode != 200 || body != "to the end" || !resp.Close || !c.closed() {
					t.Fatalf("%d %q close=%v", resp.StatusCode, body, resp.Close)
				}
			}},
		{name: "a container refuses: retried on the other", loop: 0,
			containers: []func(net.Conn, *http.Request) bool{nil, func(c net.Conn, r *http.Request) bool {
				return writeAnswer(c, "second")
			}},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				for i := range 4 {
					c := dialRaw(t, in.HTTPAddr().String())
					resp, body := c.do("GET", req("GET", "/", ""))
					if resp.StatusCode != 200 || body != "second" {
						t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
					}
				}
			}},
		{name: "the only container refuses: 502", loop: 0,
			containers: []func(net.Conn, *http.Request) bool{nil},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				c := dialRaw(t, in.HTTPAddr().String())
				resp, body := c.do("GET", req("GET", "/", ""))
				if resp.StatusCode != 502 || !strings.Contains(body, "did not answer") {
					t.Fatalf("%d %q", resp.StatusCode, body)
				}
			}},
		{name: "container closes mid-response: client cut", loop: 0,
			containers: []func(net.Conn, *http.Request) bool{func(c net.Conn, r *http.Request) bool {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
				return false
			}},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				c := dialRaw(t, in.HTTPAddr().String())
				io.WriteString(c.c, req("GET", "/", ""))
				resp, err := http.ReadResponse(c.br, nil)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				if err == nil || string(body) != "only this" {
					t.Fatalf("body %q err %v, want the part sent and a cut", body, err)
				}
			}},
		{name: "client closes mid-response", loop: 0,
			containers: []func(net.Conn, *http.Request) bool{func(c net.Conn, r *http.Request) bool {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
				chunk := make([]byte, 64<<10)
				for {
					if _, err := c.Write(chunk); err != nil {
						writeFailed <- struct{}{}
						return false
					}
				}
			}},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				c := dialRaw(t, in.HTTPAddr().String())
				io.WriteString(c.c, req("GET", "/", ""))
				if _, err := http.ReadResponse(c.br, nil); err != nil {
					t.Fatal(err)
				}
				c.c.Close()
				// The ingress closes the container connection: the
				// container's writes fail and its handler returns, and
				// the ingress still serves.
				select {
				case <-writeFailed:
				case <-time.After(5 * time.Second):
					t.Fatal("the container connection was not closed")
				}
				c2 := dialRaw(t, in.HTTPAddr().String())
				if resp, _ := c2.do("HEAD", req("HEAD", "/", "")); resp.StatusCode != 200 {
					t.Fatalf("next request: %d", resp.StatusCode)
				}
			}},
		{name: "idle timeout", loop: 1,
			mod: func(c *Config) { c.IdleTimeout = time.Second },
			containers: []func(net.Conn, *http.Request) bool{func(c net.Conn, r *http.Request) bool {
				return writeAnswer(c, "ok")
			}},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				c := dialRaw(t, in.HTTPAddr().String())
				c.do("GET", req("GET", "/", ""))
				start := time.Now()
				if !c.closed() {
					t.Fatal("idle connection not closed")
				}
				if d := time.Since(start); d < 500*time.Millisecond || d > 3*time.Second {
					t.Fatalf("closed after %s, want about the 1 s idle timeout", d)
				}
			}},
		{name: "slow-loris head", loop: 0,
			mod: func(c *Config) { c.ReadHeaderTimeout = time.Second },
			containers: []func(net.Conn, *http.Request) bool{func(c net.Conn, r *http.Request) bool {
				return writeAnswer(c, "ok")
			}},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				c := dialRaw(t, in.HTTPAddr().String())
				start := time.Now()
				head := req("GET", "/", "X-Pad: "+strings.Repeat("a", 100)+"\r\n")
				for i := 0; i < len(head)-1; i++ {
					if _, err := c.c.Write([]byte{head[i]}); err != nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
					if time.Since(start) > 4*time.Second {
						t.Fatal("a dribbled head was not cut")
					}
				}
				if !c.closed() {
					t.Fatal("not closed")
				}
				if d := time.Since(start); d > 3*time.Second {
					t.Fatalf("cut after %s, want about the 1 s head timeout", d)
				}
			}},
		{name: "body larger than the buffer: handed over", loop: 1,
			containers: []func(net.Conn, *http.Request) bool{func(c net.Conn, r *http.Request) bool {
				b, _ := io.ReadAll(r.Body)
				return writeAnswer(c, fmt.Sprintf("%d %x", len(b), b[max(0, len(b)-4):]))
			}},
			run: func(t *testing.T, in *Ingress, bs []*scriptBackend) {
				c := dialRaw(t, in.HTTPAddr().String())
				resp, body := c.do("POST", req("POST", "/", "Content-Length: 5\r\n")+"small")
				if resp.StatusCode != 200 || body != "5 6d616c6c" {
					t.Fatalf("small body: %d %q", resp.StatusCode, body)
				}
				payload := strings.Repeat("z", 40<<10) + "WXYZ"
				resp, body = c.do("POST", req("POST", "/", "Content-Length: "+strconv.Itoa(len(payload))+"\r\n")+payload)
				if want := fmt.Sprintf("%d %x", len(payload), "WXYZ"); resp.StatusCode != 200 || body != want {
					t.Fatalf("big body: %d %q, want %q", resp.StatusCode, body, want)
				}
				resp, body = c.do("GET", req("GET", "/", ""))
				if resp.StatusCode != 200 || body != "0 " {
					t.Fatalf("after: %d %q", resp.StatusCode, body)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ports []int
			var bs []*scriptBackend
			for i, script := range tc.containers {
				p := freePort(t)
				if i > 0 {
					p = ports[0] // every container on the route's port
				}
				ports = append(ports, p)
				if script != nil {
					bs = append(bs, startScriptBackend(t, fmt.Sprintf("127.0.0.%d", i+2), p, script))
				}
			}
			in := loopSetup(t, tc.mod, ports...)
			tc.run(t, in, bs)
			// A loop counts a request in finish, after the answer's last
			// bytes went to the kernel: the client can read them before
			// the count moves, so the count is awaited, not sampled.
			deadline := time.Now().Add(5 * time.Second)
			for in.fast[0].ev.served() < tc.loop && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if n := in.fast[0].ev.served(); n < tc.loop {
				t.Fatalf("the loops answered %d requests, want at least %d", n, tc.loop)
			}
		})
	}
}

// TestEventLoopShutdown: Close lets a request in flight on a loop finish.
func TestEventLoopShutdown(t *testing.T) {
	port := freePort(t)
	startScriptBackend(t, "127.0.0.2", port, func(c net.Conn, r *http.Request) bool {
		time.Sleep(500 * time.Millisecond)
		return writeAnswer(c, "late")
	})
	in := loopSetup(t, nil, port)
	c := dialRaw(t, in.HTTPAddr().String())
	idle := dialRaw(t, in.HTTPAddr().String())
	io.WriteString(c.c, req("GET", "/", ""))
	time.Sleep(100 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- in.Close() }()
	resp, body := c.read("GET")
	if resp.StatusCode != 200 || body != "late" || !resp.Close {
		t.Fatalf("in flight at shutdown: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	if !idle.closed() {
		t.Fatal("idle connection not closed at shutdown")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
}

func TestChunkScanner(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		data     int64
		used     int // -1: all
		bad      bool
	}{
		{"simple", "5\r\nhello\r\n0\r\n\r\n", 5, -1, false},
		{"extension and trailer", "3;x=y\r\nabc\r\n0\r\nA: b\r\n\r\n", 3, -1, false},
		{"LF only", "2\nab\n0\n\n", 2, -1, false},
		{"next answer after", "1\r\nx\r\n0\r\n\r\nHTTP/1.1 200", 1, len("1\r\nx\r\n0\r\n\r\n"), false},
		{"no size", "\r\nab\r\n", 0, 0, true},
		{"bad size", "zz\r\n", 0, 0, true},
		{"no CRLF after data", "2\r\nabX", 0, 0, true},
		{"too long a size", "1234567890abcdef0\r\n", 0, 0, true},
	} {
		for _, step := range []int{1, 3, 1 << 20} {
			var s chunkScanner
			used := 0
			var err error
			for i := 0; i < len(tc.in) && !s.done && err == nil; i += step {
				var k int
				k, err = s.scan([]byte(tc.in[i:min(i+step, len(tc.in))]))
				used += k
			}
			if tc.bad {
				if err == nil {
					t.Errorf("%s (step %d): accepted", tc.name, step)
				}
				continue
			}
			want := tc.used
			if want < 0 {
				want = len(tc.in)
			}
			if err != nil || !s.done || used != want || s.data != tc.data {
				t.Errorf("%s (step %d): used %d done %v data %d err %v; want %d, %d", tc.name, step, used, s.done, s.data, err, want, tc.data)
			}
		}
	}
}

// TestEventLoopNudge: a loop woken from the netpoller while another loop
// is parked readies the nudger, so that a thread watches the netpoller
// for the parked loop (evLoop.woke). Each request here comes after a
// pause, on one connection: its loop parked and wakes for it while the
// other loop, with no connection, stays parked.
func TestEventLoopNudge(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one loop: nobody to nudge for")
	}
	port := freePort(t)
	startScriptBackend(t, "127.0.0.2", port, func(c net.Conn, r *http.Request) bool {
		return writeAnswer(c, "ok")
	})
	in := loopSetup(t, nil, port)
	g := in.fast[0].ev
	if g.loops[0].erc == nil {
		t.Skip("loops block their threads in epoll_wait: no netpoller to watch")
	}
	c := dialRaw(t, in.HTTPAddr().String())
	before := g.nudges.Load()
	for i := range 5 {
		time.Sleep(20 * time.Millisecond)
		if resp, body := c.do("GET", req("GET", "/", "")); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := g.nudges.Load() - before; n < 5 {
		t.Fatalf("%d nudges for 5 wakes with the other loop parked, want at least 5", n)
	}
}
