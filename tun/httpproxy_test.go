package tun

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestHTTPProxy runs the HTTP proxy of netstack a and reaches an HTTP
// server inside netstack b: forwarded requests and CONNECT tunnels to
// mesh addresses and .internal names go through; everything else is
// refused with a status and a reason, before anything is dialled.
func TestHTTPProxy(t *testing.T) {
	a, b := newNSPair(t, implOurs, implOurs, nil)
	l, err := b.ns.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from b: "+r.Method+" "+r.URL.Path+" host "+r.Host+" xff "+r.Header.Get("X-Forwarded-For")+" via "+r.Header.Get("Via"))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	d := &MeshDialer{Dial: a.ns.DialContext, Domain: "internal", Resolve: testZone.resolve}
	go func() { served <- ServeHTTPProxy(ctx, ln, d, slog.New(slog.DiscardHandler)) }()
	proxyURL := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}, Timeout: 10 * time.Second}

	// raw sends one request as written and returns the status line's
	// code, the body, and the connection (for a tunnel).
	raw := func(t *testing.T, req string) (int, string, net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read answer to %q: %v", req, err)
		}
		if resp.StatusCode == http.StatusOK && strings.HasPrefix(req, "CONNECT") {
			return resp.StatusCode, "", c, br
		}
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), c, br
	}

	forwarded := []struct{ name, url, want string }{
		{"mesh address", "http://10.210.2.1:8080/a", "hello from b: GET /a host 10.210.2.1:8080 xff  via 1.1 uncloud"},
		{"service name", "http://web.internal:8080/b?q=1", "hello from b: GET /b host web.internal:8080 xff  via 1.1 uncloud"},
		{"machine name", "http://b.machine.internal:8080/", "hello from b: GET / host b.machine.internal:8080 xff  via 1.1 uncloud"},
	}
	for _, tt := range forwarded {
		t.Run("GET "+tt.name, func(t *testing.T) {
			resp, err := client.Get(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(body) != tt.want {
				t.Fatalf("%d %q, want 200 %q", resp.StatusCode, body, tt.want)
			}
		})
	}
	t.Run("a client's X-Forwarded-For is not passed on", func(t *testing.T) {
		code, body, _, _ := raw(t, "GET http://10.210.2.1:8080/ HTTP/1.1\r\nHost: 10.210.2.1:8080\r\nX-Forwarded-For: 1.2.3.4\r\nConnection: close\r\n\r\n")
		if code != http.StatusOK || !strings.Contains(body, "xff  via") {
			t.Fatalf("%d %q", code, body)
		}
	})
	for _, target := range []string{"10.210.2.1:8080", "web.internal:8080"} {
		t.Run("CONNECT "+target, func(t *testing.T) {
			code, _, c, br := raw(t, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
			if code != http.StatusOK {
				t.Fatalf("CONNECT answered %d", code)
			}
			// Through the tunnel: an ordinary request to b's server.
			io.WriteString(c, "GET /tunnel HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if !strings.HasPrefix(string(body), "hello from b: GET /tunnel") {
				t.Fatalf("through the tunnel: %d %q", resp.StatusCode, body)
			}
		})
	}
	t.Run("CONNECT with the first bytes right behind it", func(t *testing.T) {
		code, _, c, br := raw(t, "CONNECT 10.210.2.1:8080 HTTP/1.1\r\nHost: x\r\n\r\nGET /eager HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
		if code != http.StatusOK {
			t.Fatalf("CONNECT answered %d", code)
		}
		_ = c
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if !strings.HasPrefix(string(body), "hello from b: GET /eager") {
			t.Fatalf("through the tunnel: %d %q", resp.StatusCode, body)
		}
	})

	refused := []struct {
		name string
		req  string
		code int
		body string
	}{
		{"GET outside the mesh", "GET http://198.51.100.1/ HTTP/1.1\r\nHost: 198.51.100.1\r\n\r\n", 403, "outside the mesh"},
		{"GET loopback", "GET http://127.0.0.1:8080/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 403, "outside the mesh"},
		{"GET a public name", "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", 403, "*.internal names"},
		{"GET an internal name outside the mesh", "GET http://outside.internal/ HTTP/1.1\r\nHost: outside.internal\r\n\r\n", 403, "outside the mesh"},
		{"GET ipv6", "GET http://[2001:db8::1]/ HTTP/1.1\r\nHost: x\r\n\r\n", 403, "outside the mesh"},
		{"CONNECT outside the mesh", "CONNECT 198.51.100.1:443 HTTP/1.1\r\nHost: 198.51.100.1:443\r\n\r\n", 403, "outside the mesh"},
		{"CONNECT a public name", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 403, "*.internal names"},
		{"CONNECT an internal name outside the mesh", "CONNECT outside.internal:443 HTTP/1.1\r\nHost: outside.internal:443\r\n\r\n", 403, "outside the mesh"},
		{"CONNECT without a port", "CONNECT web.internal HTTP/1.1\r\nHost: web.internal\r\n\r\n", 400, "want host:port"},
		{"CONNECT port 0", "CONNECT web.internal:0 HTTP/1.1\r\nHost: web.internal:0\r\n\r\n", 400, "want host:port"},
		{"GET https absolute URI", "GET https://web.internal/ HTTP/1.1\r\nHost: web.internal\r\n\r\n", 400, "use CONNECT"},
		{"origin-form GET", "GET / HTTP/1.1\r\nHost: web.internal\r\n\r\n", 400, "absolute URIs"},
		{"unknown internal name", "GET http://nobody.internal/ HTTP/1.1\r\nHost: nobody.internal\r\n\r\n", 502, "no such name"},
		{"closed port", "GET http://10.210.2.1:8081/ HTTP/1.1\r\nHost: x\r\n\r\n", 502, "refused"},
		{"CONNECT to a closed port", "CONNECT 10.210.2.1:8081 HTTP/1.1\r\nHost: x\r\n\r\n", 502, "refused"},
		{"a request that came through already", "GET http://10.210.2.1:8080/ HTTP/1.1\r\nHost: x\r\nVia: 1.1 other, 1.1 uncloud\r\n\r\n", 508, "already"},
		{"headers too large", "GET http://web.internal:8080/ HTTP/1.1\r\nHost: web.internal\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", 431, ""},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			code, body, _, _ := raw(t, tt.req)
			if code != tt.code || !strings.Contains(body, tt.body) {
				t.Fatalf("answer %d %q, want %d with %q", code, body, tt.code, tt.body)
			}
		})
	}
	if testZone.asked("example.com") {
		t.Error("a name outside .internal was looked up")
	}
	t.Run("a client that sends nothing is dropped", func(t *testing.T) {
		if testing.Short() {
			t.Skip("waits for the header timeout")
		}
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(httpProxyHeaderTimeout + 10*time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
			t.Fatalf("read %v; want the proxy to close a silent client after %v", err, httpProxyHeaderTimeout)
		}
	})

	cancel()
	waitServed(t, "ServeHTTPProxy", served)
}
