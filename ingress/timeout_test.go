package ingress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	gvheader "gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/uncloud-mesh/uncloud/record"
)

// timeoutBackend is a container whose answer depends on the path:
// /hang reads the request and never answers, /stall sends the head and
// part of the body and then nothing, /slow answers within the timeout
// but takes longer than it in all (head after 300 ms, then ten parts
// 300 ms apart), anything else "ok" at once.
type timeoutBackend struct {
	accepted atomic.Int64
	hangs    *atomic.Int64 // /hang requests received, shared by the route's containers
	// released gets the path of each request whose connection the
	// ingress closed while the container held it.
	released chan string
}

var slowBody = strings.Repeat("slow.", 10)

func startTimeoutBackend(t *testing.T, ln net.Listener, hangs *atomic.Int64, released chan string) *timeoutBackend {
	t.Helper()
	b := &timeoutBackend{hangs: hangs, released: released}
	serveTestListener(t, ln, &b.accepted, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, r.Body)
			switch r.URL.Path {
			case "/hang":
				b.hangs.Add(1)
				b.hold(br, r.URL.Path)
				return
			case "/stall":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
				b.hold(br, r.URL.Path)
				return
			case "/slow":
				time.Sleep(300 * time.Millisecond)
				io.WriteString(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(slowBody)))
				for part := range strings.SplitSeq(strings.TrimSuffix(slowBody, "."), ".") {
					time.Sleep(300 * time.Millisecond)
					if _, err := io.WriteString(c, part+"."); err != nil {
						return
					}
				}
			default:
				if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
					return
				}
			}
		}
	})
	return b
}

// hold waits until the ingress closes the connection.
func (b *timeoutBackend) hold(br *bufio.Reader, path string) {
	io.Copy(io.Discard, br)
	b.released <- path
}

// timeoutPaths are the request paths the response timeout holds on: the
// event loops (plain HTTP in kernel mode), the goroutine path (HTTPS,
// netstack mode, and what a loop hands over) and net/http (h2 and what
// the fast path hands over; a request with a body goes through
// http.Transport there); the last two also with the containers in a
// netstack (userspace mode), whose connections report timeouts their
// own way.
var timeoutPaths = []struct {
	name     string
	mod      func(*Config)
	netstack bool
}{
	{"loop", nil, false},
	{"goroutine", func(c *Config) { c.NoEventLoop = true }, false},
	{"net-http", func(c *Config) { c.NetHTTPOnly = true }, false},
	{"netstack", nil, true},
	{"netstack-net-http", func(c *Config) { c.NetHTTPOnly = true }, true},
}

// testNetstack is a gvisor netstack, as the agent's userspace mode runs,
// with ips on its loopback: containers listen there, and the ingress
// dials them through it (Config.Dial).
type testNetstack struct{ s *stack.Stack }

func newTestNetstack(t *testing.T, ips ...string) *testNetstack {
	t.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
	})
	t.Cleanup(s.Destroy)
	if err := s.CreateNIC(1, loopback.New()); err != nil {
		t.Fatalf("netstack: create nic: %v", err)
	}
	for _, ip := range ips {
		a := tcpip.AddrFrom4(netip.MustParseAddr(ip).As4())
		pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: a.WithPrefix()}
		if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			t.Fatalf("netstack: add %s: %v", ip, err)
		}
	}
	s.SetRouteTable([]tcpip.Route{{Destination: gvheader.IPv4EmptySubnet, NIC: 1}})
	return &testNetstack{s: s}
}

func (n *testNetstack) full(ip string, port int) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(netip.MustParseAddr(ip).As4()), Port: uint16(port)}
}

func (n *testNetstack) listen(t *testing.T, ip string, port int) net.Listener {
	t.Helper()
	ln, err := gonet.ListenTCP(n.s, n.full(ip, port), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("netstack: listen on %s:%d: %v", ip, port, err)
	}
	return ln
}

func (n *testNetstack) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("netstack dial %s: %w", addr, err)
	}
	return gonet.DialContextTCP(ctx, n.s, n.full(ap.Addr().String(), int(ap.Port())), ipv4.ProtocolNumber)
}

// TestResponseTimeout: a container that does not answer within
// ResponseTimeout gets its client a 504 (not retried on the other
// container, counted as a 5xx, the client connection kept), one that
// stalls in the middle of a body gets the client connection cut, and
// one that is slow but never silent for the timeout is answered whole
// (over 3 s: a sweep of the loops falls in it, however they are timed).
func TestResponseTimeout(t *testing.T) {
	const timeout = time.Second
	for _, p := range timeoutPaths {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			ips := []string{"127.0.0.2", "127.0.0.3"}
			var ns *testNetstack
			if p.netstack {
				ns = newTestNetstack(t, ips...)
			}
			st := openStore(t)
			in := startIngress(t, st, func(c *Config) {
				c.ResponseTimeout = timeout
				c.Metrics = m
				if ns != nil {
					c.Dial = ns.dial
				}
				if p.mod != nil {
					p.mod(c)
				}
			})
			loop := p.mod == nil && !p.netstack
			if loop && in.fast[0].ev == nil {
				t.Skip("no event loops here")
			}
			port := freePort(t)
			var hangs atomic.Int64
			released := make(chan string, 100)
			for _, ip := range ips {
				var ln net.Listener
				if ns != nil {
					ln = ns.listen(t, ip, port)
				} else {
					var err error
					if ln, err = net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port))); err != nil {
						t.Fatal(err)
					}
				}
				startTimeoutBackend(t, ln, &hangs, released)
			}
			put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/http", port)}})
			put(t, st, container("c1", "web", "127.0.0.2"))
			put(t, st, container("c2", "web", "127.0.0.3"))
			eventually(t, "route", func() bool {
				r := in.table.Load().lookup("app.test", "/")
				return r != nil && len(r.Backends) == 2
			})

			// What the cases that ran must have left: the loops' count of
			// requests they answered, and the 504s in the metrics.
			var loopServed uint64
			var timeouts float64
			for _, tc := range []struct {
				method, path, body string
				want               string // "504", "cut" or "200"
			}{
				{"GET", "/hang", "", "504"},
				{"HEAD", "/hang", "", "504"},
				{"POST", "/hang", "x=1", "504"},
				{"GET", "/stall", "", "cut"},
				{"POST", "/stall", "x=1", "cut"},
				{"GET", "/slow", "", "200"},
				{"POST", "/slow", "x=1", "200"},
			} {
				name := tc.method + " " + tc.path
				t.Run(tc.method+"_"+tc.path[1:], func(t *testing.T) {
					c := dialRaw(t, in.HTTPAddr().String())
					// A first request: on the loop path, the loops count
					// it, so the connection is theirs (a loop hands one over
					// only at a request's start or before an answer's head).
					if resp, body := c.do("GET", req("GET", "/", "")); resp.StatusCode != 200 || body != "ok" {
						t.Fatalf("%s: first request: %d %q", name, resp.StatusCode, body)
					}
					loopServed++
					raw := req(tc.method, tc.path, "")
					if tc.body != "" {
						raw = req(tc.method, tc.path, fmt.Sprintf("Content-Length: %d\r\n", len(tc.body))) + tc.body
					}
					hung := hangs.Load()
					start := time.Now()
					if _, err := io.WriteString(c.c, raw); err != nil {
						t.Fatal(err)
					}
					switch tc.want {
					case "504":
						resp, body := c.read(tc.method)
						took := time.Since(start)
						if resp.StatusCode != 504 || resp.Close || (tc.method != "HEAD" && !strings.Contains(body, "did not answer within 1s")) {
							t.Fatalf("%s: %d %q close=%v, want 504 on a kept connection", name, resp.StatusCode, body, resp.Close)
						}
						// The goroutine paths hold the bound to a tenth of
						// it, the loops check it once a second (1-3 s
						// there); some slack for a loaded machine.
						if took < timeout*8/10 || took > 4*time.Second {
							t.Fatalf("%s: 504 after %s, want about the 1 s timeout", name, took)
						}
						if n := hangs.Load() - hung; n != 1 {
							t.Fatalf("%s: the containers got the request %d times, want once (no retry)", name, n)
						}
						awaitReleased(t, name, released, tc.path)
						// The connection serves the next request, and nothing
						// of the 504 (a HEAD's body) is left to be misread.
						if resp, body := c.do("GET", req("GET", "/", "")); resp.StatusCode != 200 || body != "ok" {
							t.Fatalf("%s: next request: %d %q", name, resp.StatusCode, body)
						}
						loopServed += 2
						timeouts++
					case "cut":
						cutAfter(t, c, name, strings.HasSuffix(p.name, "net-http"), start, timeout)
						awaitReleased(t, name, released, tc.path)
					case "200":
						resp, body := c.read(tc.method)
						if resp.StatusCode != 200 || body != slowBody || resp.Close {
							t.Fatalf("%s: %d %q close=%v", name, resp.StatusCode, body, resp.Close)
						}
						if took := time.Since(start); took < 3*time.Second {
							t.Fatalf("%s: answered in %s, the test needs more than the timeout in all", name, took)
						}
						loopServed++
					}
				})
			}

			count := func() float64 { return testutil.ToFloat64(m.requests.WithLabelValues("app.test", "5xx")) }
			for deadline := time.Now().Add(5 * time.Second); count() < timeouts && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			if n := count(); n != timeouts {
				t.Fatalf("metrics count %v 5xx answers, want the %v 504s", n, timeouts)
			}
			if loop {
				// A loop counts a request after its answer's last bytes
				// went out: awaited, not sampled.
				g := in.fast[0].ev
				for deadline := time.Now().Add(5 * time.Second); g.served() < loopServed && time.Now().Before(deadline); {
					time.Sleep(5 * time.Millisecond)
				}
				if n := g.served(); n < loopServed {
					t.Fatalf("the loops answered %d requests, want %d", n, loopServed)
				}
			}
		})
	}
}

// cutAfter reads an answer the container stalled in: its head and the
// part sent, then the end of the connection, about timeout after start.
// net/http buffers a small answer, so there the client may see the
// connection end before any of it.
func cutAfter(t *testing.T, c *rawClient, name string, buffered bool, start time.Time, timeout time.Duration) {
	t.Helper()
	resp, err := http.ReadResponse(c.br, nil)
	if err == nil {
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", name, resp.StatusCode)
		}
		body, err := io.ReadAll(resp.Body)
		if err == nil || string(body) != "part" {
			t.Fatalf("%s: body %q err %v, want the part sent and a cut", name, body, err)
		}
	} else if !buffered || !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		t.Fatalf("%s: read response: %v", name, err)
	}
	if !c.closed() {
		t.Fatalf("%s: client connection not closed", name)
	}
	if took := time.Since(start); took < timeout*8/10 || took > 4*time.Second {
		t.Fatalf("%s: cut after %s, want about the 1 s timeout", name, took)
	}
}

// awaitReleased waits until the ingress closed the container connection
// that held path.
func awaitReleased(t *testing.T, name string, released chan string, path string) {
	t.Helper()
	select {
	case p := <-released:
		if p != path {
			t.Fatalf("%s: the container connection of %s was closed", name, p)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: the container connection was not closed", name)
	}
}
