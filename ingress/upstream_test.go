package ingress

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testUpstream serves h on loopback and returns a direct client to it with
// counters of the connections the server accepted and saw closed.
type upstreamFixture struct {
	u              *upstream
	addr           string
	opened, closed atomic.Int64
	mu             sync.Mutex
	idle           map[net.Conn]bool
}

func newUpstreamFixture(t *testing.T, h http.HandlerFunc) *upstreamFixture {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &upstreamFixture{addr: ln.Addr().String(), idle: map[net.Conn]bool{}}
	srv := &http.Server{Handler: h, ConnState: func(c net.Conn, s http.ConnState) {
		f.mu.Lock()
		defer f.mu.Unlock()
		switch s {
		case http.StateNew:
			f.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			f.closed.Add(1)
			delete(f.idle, c)
		case http.StateIdle:
			f.idle[c] = true
		case http.StateActive:
			delete(f.idle, c)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	f.u = newUpstream(&http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute, DisableCompression: true,
	})
	t.Cleanup(f.u.closeIdle)
	return f
}

// closeIdleOnServer makes the backend drop its kept connections, as a
// container's idle timeout would.
func (f *upstreamFixture) closeIdleOnServer() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.idle {
		c.Close()
	}
}

func (f *upstreamFixture) get(t *testing.T, ctx context.Context, method, path string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+f.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f.u.RoundTrip(req)
}

func testUpstreamHandler(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
	case "/notmodified":
		w.WriteHeader(http.StatusNotModified)
	case "/chunked":
		io.WriteString(w, "chunk one,")
		w.(http.Flusher).Flush()
		io.WriteString(w, "chunk two")
	case "/big":
		io.WriteString(w, strings.Repeat("x", 1<<20))
	case "/hints":
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "after hints")
	case "/close":
		w.Header().Set("Connection", "close")
		io.WriteString(w, "closing")
	default:
		io.WriteString(w, "hello "+r.Method)
	}
}

func TestUpstreamKeepsConnections(t *testing.T) {
	f := newUpstreamFixture(t, testUpstreamHandler)
	cases := []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/", 200, "hello GET"},
		{"HEAD", "/", 200, ""},
		{"DELETE", "/", 200, "hello DELETE"},
		{"GET", "/nocontent", 204, ""},
		{"GET", "/notmodified", 304, ""},
		{"GET", "/chunked", 200, "chunk one,chunk two"},
		{"GET", "/big", 200, strings.Repeat("x", 1<<20)},
		{"GET", "/hints", 200, "after hints"},
	}
	for round := 0; round < 3; round++ {
		for _, c := range cases {
			resp, err := f.get(t, context.Background(), c.method, c.path)
			if err != nil {
				t.Fatalf("%s %s: %v", c.method, c.path, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != c.status || string(body) != c.body {
				t.Fatalf("%s %s: %d %.40q %v; want %d %.40q", c.method, c.path, resp.StatusCode, body, err, c.status, c.body)
			}
		}
	}
	if n := f.opened.Load(); n != 1 {
		t.Fatalf("backend accepted %d connections for %d sequential requests; want 1", n, 3*len(cases))
	}
}

func TestUpstreamDoesNotKeepWhatItMustNot(t *testing.T) {
	cases := []struct {
		name string
		do   func(t *testing.T, f *upstreamFixture)
	}{
		{"backend says close", func(t *testing.T, f *upstreamFixture) {
			resp, err := f.get(t, context.Background(), "GET", "/close")
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(resp.Body)
			resp.Body.Close()
		}},
		{"body abandoned", func(t *testing.T, f *upstreamFixture) {
			resp, err := f.get(t, context.Background(), "GET", "/big")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Read(make([]byte, 100))
			resp.Body.Close()
		}},
		{"client gone", func(t *testing.T, f *upstreamFixture) {
			ctx, cancel := context.WithCancel(context.Background())
			resp, err := f.get(t, ctx, "GET", "/big")
			if err != nil {
				t.Fatal(err)
			}
			cancel()
			io.ReadAll(resp.Body)
			resp.Body.Close()
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newUpstreamFixture(t, testUpstreamHandler)
			c.do(t, f)
			eventually(t, "the backend sees the connection closed", func() bool { return f.closed.Load() == 1 })
			// The next request gets a new connection and is answered.
			resp, err := f.get(t, context.Background(), "GET", "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "hello GET" || f.opened.Load() != 2 {
				t.Fatalf("after: %q, %d connections opened; want hello GET, 2", body, f.opened.Load())
			}
		})
	}
}

func TestUpstreamRetriesConnectionClosedWhileIdle(t *testing.T) {
	f := newUpstreamFixture(t, testUpstreamHandler)
	for i := 0; i < 5; i++ {
		resp, err := f.get(t, context.Background(), "GET", "/")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello GET" {
			t.Fatalf("request %d: %q", i, body)
		}
		eventually(t, "the connection idle on the backend", func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return len(f.idle) == 1
		})
		f.closeIdleOnServer()
	}
	if n := f.opened.Load(); n != 5 {
		t.Fatalf("%d connections; want 5 (each closed by the backend)", n)
	}
}

func TestUpstreamCancelWhileWaiting(t *testing.T) {
	release := make(chan struct{})
	f := newUpstreamFixture(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := f.get(t, ctx, "GET", "/")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v; want the context's deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("returned after %v", d)
	}
	eventually(t, "the backend sees the connection closed", func() bool { return f.closed.Load() == 1 })
}

func TestUpstreamBoundsResponseHeader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
		for i := 0; i < 2000; i++ {
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	}()
	u := newUpstream(&http.Transport{DialContext: (&net.Dialer{}).DialContext, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute})
	defer u.closeIdle()
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/", nil)
	_, err = u.RoundTrip(req)
	if !errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("err %v; want %v", err, errHeaderTooLarge)
	}
}

func TestDirectOnlyForPlainRequests(t *testing.T) {
	cases := []struct {
		name   string
		mod    func(r *http.Request)
		direct bool
	}{
		{"GET", func(r *http.Request) {}, true},
		{"body", func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader("x")) }, false},
		{"websocket", func(r *http.Request) { r.Header.Set("Connection", "Upgrade"); r.Header.Set("Upgrade", "websocket") }, false},
		{"https upstream", func(r *http.Request) { r.URL.Scheme = "https" }, false},
	}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:1/", nil)
		c.mod(req)
		if got := direct(req); got != c.direct {
			t.Errorf("%s: direct %v; want %v", c.name, got, c.direct)
		}
	}
}

func TestUpstreamClosesIdleConnections(t *testing.T) {
	f := newUpstreamFixture(t, testUpstreamHandler)
	f.u.idleTimeout = 100 * time.Millisecond
	resp, err := f.get(t, context.Background(), "GET", "/")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	// Nobody asks for this container again: the kept connection must
	// still be closed, not left open for ever.
	eventually(t, "the idle connection closed", func() bool { return f.closed.Load() == 1 })
	f.u.mu.Lock()
	kept, armed := len(f.u.idle), f.u.sweep != nil
	f.u.mu.Unlock()
	if kept != 0 || armed {
		t.Fatalf("after the sweep: %d addresses kept, timer armed %v; want none", kept, armed)
	}
}
