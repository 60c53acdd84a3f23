package ingress

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
)

func TestProxyRoutesFromState(t *testing.T) {
	st := openStore(t)
	in := startIngress(t, st, nil)
	port := freePort(t)
	b := startBackend(t, "127.0.0.2", port, "one", nil)
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/http", port)}})
	put(t, st, &record.Service{Name: "secure", Ports: []string{fmt.Sprintf("secure.test:%d/https", port)}})
	put(t, st, container("c1", "web", "127.0.0.2"))

	eventually(t, "route to web", func() bool {
		resp, body, err := get(t, noRedirect, in, "app.test", "/hello?x=1")
		return err == nil && resp.StatusCode == 200 && body == "one"
	})
	r := <-b.seen
	if r.URL.RequestURI() != "/hello?x=1" || r.Host != "app.test" {
		t.Fatalf("backend saw %s host %s", r.URL.RequestURI(), r.Host)
	}
	if r.Header.Get("X-Forwarded-For") != "127.0.0.1" || r.Header.Get("X-Forwarded-Proto") != "http" ||
		r.Header.Get("X-Forwarded-Host") != "app.test" {
		t.Fatalf("forwarded headers: %v", r.Header)
	}

	// A client cannot forge X-Forwarded-For.
	req, _ := http.NewRequest("GET", "http://"+in.HTTPAddr().String()+"/", nil)
	req.Host = "app.test"
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if r := <-b.seen; r.Header.Get("X-Forwarded-For") != "127.0.0.1" {
		t.Fatalf("forged X-Forwarded-For passed: %q", r.Header.Get("X-Forwarded-For"))
	}

	// An https route redirects plain http, keeping path and query.
	resp, _, err = get(t, noRedirect, in, "secure.test", "/a/b?c=d")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("https://secure.test:%d/a/b?c=d", in.HTTPSAddr().(*net.TCPAddr).Port)
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("redirect: %d %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	// Unknown host: a clear 404 page naming the host.
	resp, body, err := get(t, noRedirect, in, "nobody.test", "/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 404 || !strings.Contains(body, "nobody.test") || !strings.Contains(body, "No service is published") {
		t.Fatalf("unknown host: %d %q", resp.StatusCode, body)
	}
	// HTML in the host is escaped.
	_, body, _ = get(t, noRedirect, in, "<script>", "/")
	if strings.Contains(body, "<script>") {
		t.Fatal("host not escaped in the 404 page")
	}

	// A service whose containers are all gone answers 502, clearly.
	del(t, st, container("c1", "web", "").Key())
	eventually(t, "502 without containers", func() bool {
		resp, body, err := get(t, noRedirect, in, "app.test", "/")
		return err == nil && resp.StatusCode == 502 && strings.Contains(body, "service web has no running container")
	})
}

// TestRouteSwapsUnderLoad adds and removes containers while clients send
// requests without pause: no request may fail, and new containers take
// traffic within a second of their record.
func TestRouteSwapsUnderLoad(t *testing.T) {
	st := openStore(t)
	in := startIngress(t, st, nil)
	port := freePort(t)
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/http", port)}})
	backends := map[string]*backendServer{}
	for _, n := range []string{"2", "3"} {
		backends[n] = startBackend(t, "127.0.0."+n, port, "b"+n, nil)
		put(t, st, container("c"+n, "web", "127.0.0."+n))
	}
	eventually(t, "first route", func() bool {
		resp, _, err := get(t, noRedirect, in, "app.test", "/")
		return err == nil && resp.StatusCode == 200
	})

	var mu sync.Mutex
	seen := map[string]int{}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, body, err := get(t, client, in, "app.test", "/")
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%v %v %q", err, resp, body))
					continue
				}
				ok.Add(1)
				mu.Lock()
				seen[body]++
				mu.Unlock()
			}
		}()
	}
	waitSeen := func(name string) {
		t.Helper()
		mu.Lock()
		clear(seen)
		mu.Unlock()
		start := time.Now()
		eventually(t, name+" serving", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return seen[name] > 0
		})
		t.Logf("%s took traffic %v after its record", name, time.Since(start).Round(time.Millisecond))
	}
	for round := 0; round < 3; round++ {
		// Add 4, remove 2 (record first, then the container stops, as a
		// stop does), add 2 back, remove 4.
		backends["4"] = startBackend(t, "127.0.0.4", port, "b4", nil)
		put(t, st, container("c4", "web", "127.0.0.4"))
		waitSeen("b4")
		del(t, st, container("c2", "web", "").Key())
		time.Sleep(300 * time.Millisecond)
		backends["2"].close()
		backends["2"] = startBackend(t, "127.0.0.2", port, "b2", nil)
		put(t, st, container("c2", "web", "127.0.0.2"))
		waitSeen("b2")
		del(t, st, container("c4", "web", "").Key())
		time.Sleep(300 * time.Millisecond)
		backends["4"].close()
	}
	// A container that dies before its record goes: passive health
	// retries on another one, still no failure.
	backends["3"].close()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d requests ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during route swaps; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Fatalf("only %d requests went through", ok.Load())
	}
}

// TestDeadBackendsRetried: a request that meets dead backends (refused:
// nothing was sent, so even one with a body is retried) goes on to the
// live one, and each dead one is put aside after its one failure. Two
// dead ones are a rollout where the old container is gone while the new
// one does not listen yet.
func TestDeadBackendsRetried(t *testing.T) {
	for _, tc := range []struct {
		name     string
		dead     []string // addresses nothing listens on
		method   string
		body     string
		requests int
	}{
		{name: "one dead, POST with a body", dead: []string{"127.0.0.3"}, method: "POST", body: "payload", requests: 20},
		{name: "two dead", dead: []string{"127.0.0.3", "127.0.0.4"}, method: "GET", requests: 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t)
			in := startIngress(t, st, nil)
			port := freePort(t)
			startBackend(t, "127.0.0.2", port, "alive", nil)
			put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/http", port)}})
			put(t, st, container("c2", "web", "127.0.0.2"))
			for i, addr := range tc.dead {
				put(t, st, container(fmt.Sprintf("c%d", i+3), "web", addr))
			}
			eventually(t, "all backends", func() bool {
				r := in.table.Load().lookup("app.test", "/")
				return r != nil && len(r.Backends) == 1+len(tc.dead)
			})
			for i := 0; i < tc.requests; i++ {
				req, _ := http.NewRequest(tc.method, "http://"+in.HTTPAddr().String()+"/", strings.NewReader(tc.body))
				req.Host = "app.test"
				resp, err := noRedirect.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "alive" {
					t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
				}
			}
			r := in.table.Load().lookup("app.test", "/")
			for _, b := range r.Backends {
				if strings.HasPrefix(b.addr, "127.0.0.2") {
					continue
				}
				if b.failures.Load() != 1 || !b.down(time.Now().UnixNano()) {
					t.Errorf("dead backend %s: %d failures, down %v; want put aside after one failure", b.addr, b.failures.Load(), b.down(time.Now().UnixNano()))
				}
			}
		})
	}
}

func TestWebsocketThroughProxy(t *testing.T) {
	st := openStore(t)
	in := startIngress(t, st, nil)
	port := freePort(t)
	// A minimal upgrade-and-echo server: the proxy must pass the 101 and
	// then bytes both ways.
	startBackend(t, "127.0.0.2", port, "ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
	}))
	put(t, st, &record.Service{Name: "ws", Ports: []string{fmt.Sprintf("ws.test:%d/http", port)}})
	put(t, st, container("c2", "ws", "127.0.0.2"))
	eventually(t, "route", func() bool { return in.table.Load().lookup("ws.test", "/") != nil })
	eventually(t, "backend", func() bool { return len(in.table.Load().lookup("ws.test", "/").Backends) == 1 })

	conn, err := net.Dial("tcp", in.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(conn, "GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	for _, msg := range []string{"hello", "over the proxy"} {
		fmt.Fprint(conn, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: got %q %v", msg, buf, err)
		}
	}
}

// selfSigned makes a certificate for names, for tests that serve TLS
// without ACME.
func selfSigned(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	tmpl.DNSNames = nil
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestHTTP2OverTLS(t *testing.T) {
	st := openStore(t)
	in := startIngress(t, st, nil)
	cert, pool := selfSigned(t, "secure.test")
	if _, err := in.certs.cfg.CacheUnmanagedTLSCertificate(context.Background(), cert, nil); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	b := startBackend(t, "127.0.0.2", port, "tls-backend", nil)
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("secure.test:%d/https", port)}})
	put(t, st, container("c2", "web", "127.0.0.2"))
	addr := in.HTTPSAddr().String()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		ForceAttemptHTTP2: true,
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "secure.test"},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	eventually(t, "https route", func() bool {
		resp, err := client.Get("https://secure.test/x")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && string(body) == "tls-backend" {
			if resp.ProtoMajor != 2 {
				t.Fatalf("proto %s, want HTTP/2", resp.Proto)
			}
			return true
		}
		return false
	})
	r := <-b.seen
	if r.Header.Get("X-Forwarded-Proto") != "https" || r.Header.Get("X-Forwarded-Host") != "secure.test" {
		t.Fatalf("forwarded headers over TLS: %v", r.Header)
	}
}

// TestBadInputDoesNotStallOthers: malformed requests get 400, a huge
// header 431, slow-loris clients are cut off by the header timeout; all
// the while a normal client keeps being served promptly.
func TestBadInputDoesNotStallOthers(t *testing.T) {
	st := openStore(t)
	in := startIngress(t, st, func(c *Config) {
		c.ReadHeaderTimeout = time.Second
		c.MaxHeaderBytes = 8 << 10
	})
	port := freePort(t)
	startBackend(t, "127.0.0.2", port, "ok", nil)
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/http", port)}})
	put(t, st, container("c2", "web", "127.0.0.2"))
	eventually(t, "route", func() bool {
		resp, _, err := get(t, noRedirect, in, "app.test", "/")
		return err == nil && resp.StatusCode == 200
	})
	addr := in.HTTPAddr().String()
	raw := func(req string) string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req)
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	for _, tc := range []struct{ name, req, want string }{
		{"garbage", "HELLO\r\n\r\n", "400"},
		{"bad version", "GET / HTTP/9.9\r\nHost: app.test\r\n\r\n", "505"},
		{"no host", "GET / HTTP/1.1\r\n\r\n", "400"},
		{"bad header", "GET / HTTP/1.1\r\nHost: app.test\r\nBad Header: x\r\n\r\n", "400"},
		{"huge header", "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", "431"},
		{"body too large", "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 999999999999\r\n\r\n", "413"},
	} {
		if got := raw(tc.req); !strings.Contains(got, " "+tc.want+" ") {
			t.Errorf("%s: status line %q, want %s", tc.name, got, tc.want)
		}
	}

	// 50 slow-loris connections dribble a header byte every 200 ms.
	var cut atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
			start := time.Now()
			for time.Since(start) < 10*time.Second {
				if _, err := c.Write([]byte("a")); err != nil {
					cut.Add(1)
					return
				}
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
					cut.Add(1) // the server closed (or answered 408): cut off
					return
				}
			}
		}()
	}
	// Meanwhile normal requests keep succeeding promptly.
	for i := 0; i < 20; i++ {
		start := time.Now()
		resp, body, err := get(t, noRedirect, in, "app.test", "/")
		if err != nil || resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("normal request during slow-loris: %v %v", err, resp)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("normal request took %v during slow-loris", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	if cut.Load() != 50 {
		t.Fatalf("%d of 50 slow-loris connections cut off within 10 s; the header timeout is 1 s", cut.Load())
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// mutableReach is a Reachability the test flips, like gossip declaring a
// machine dead.
type mutableReach struct {
	mu      sync.Mutex
	down    map[string]bool
	changed chan struct{}
}

func (r *mutableReach) Reachable(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.down[id]
}
func (r *mutableReach) Changed() <-chan struct{} { return r.changed }
func (r *mutableReach) setDown(id string) {
	r.mu.Lock()
	r.down[id] = true
	r.mu.Unlock()
	r.changed <- struct{}{}
}

// TestUnreachableMachineCutsConnections: a request stuck on a container
// whose machine vanished (it accepted, then went silent, as a partition
// looks) is cut when gossip declares the machine unreachable and retried
// on another container.
func TestUnreachableMachineCutsConnections(t *testing.T) {
	st := openStore(t)
	reach := &mutableReach{down: map[string]bool{}, changed: make(chan struct{}, 1)}
	in := startIngress(t, st, func(c *Config) { c.Reach = reach })
	port := freePort(t)
	stuck := make(chan struct{})
	defer close(stuck)
	startBackend(t, "127.0.0.2", port, "silent", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-stuck // never answers while the test runs
	}))
	startBackend(t, "127.0.0.3", port, "alive", nil)
	put(t, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/http", port)}})
	c2, c3 := container("c2", "web", "127.0.0.2"), container("c3", "web", "127.0.0.3")
	c2.MachineID, c3.MachineID = "m2", "m3"
	put(t, st, c2)
	put(t, st, c3)
	eventually(t, "two backends", func() bool {
		r := in.table.Load().lookup("app.test", "/")
		return r != nil && len(r.Backends) == 2
	})
	// Round robin: of two requests, one sticks on the silent container.
	type res struct {
		body string
		err  error
	}
	results := make(chan res, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, body, err := get(t, &http.Client{Timeout: 30 * time.Second}, in, "app.test", "/")
			results <- res{body, err}
		}()
	}
	first := <-results
	if first.err != nil || first.body != "alive" {
		t.Fatalf("first answer %+v", first)
	}
	select {
	case r := <-results:
		t.Fatalf("the silent container answered: %+v", r)
	case <-time.After(500 * time.Millisecond):
	}
	start := time.Now()
	reach.setDown("m2")
	select {
	case r := <-results:
		if r.err != nil || r.body != "alive" {
			t.Fatalf("stuck request after m2 went down: %+v, want retried on the alive container", r)
		}
		t.Logf("stuck request answered by another container %v after m2 became unreachable", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("request still stuck 10 s after its container's machine became unreachable")
	}
}
