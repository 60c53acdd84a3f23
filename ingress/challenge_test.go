package ingress

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
)

// fakeIssuer stands for the issuing ingress machine: an HTTP server (for
// forwarded HTTP-01 requests) and a raw TCP listener (for spliced
// TLS-ALPN connections) whose behaviour the test chooses.
type fakeIssuer struct {
	http, tls net.Listener
	requests  atomic.Int32
	conns     atomic.Int32
	mode      atomic.Value // "answer", "huge", "hang"
	release   chan struct{}
}

func startFakeIssuer(t *testing.T) *fakeIssuer {
	f := &fakeIssuer{release: make(chan struct{})}
	f.mode.Store("answer")
	var err error
	if f.http, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if f.tls, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		switch f.mode.Load() {
		case "huge":
			chunk := strings.Repeat("x", 32<<10)
			for range 32 {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
		case "hang":
			select {
			case <-f.release:
			case <-r.Context().Done():
			}
		default:
			fmt.Fprintf(w, "keyauth-for-%s", r.Host)
		}
	})}
	go srv.Serve(f.http)
	go func() {
		for {
			c, err := f.tls.Accept()
			if err != nil {
				return
			}
			f.conns.Add(1)
			go func() {
				defer c.Close()
				// Flood the client: the splice must cut it.
				chunk := make([]byte, 32<<10)
				for range 64 {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		close(f.release)
		srv.Close()
		f.tls.Close()
	})
	return f
}

func (f *fakeIssuer) peerAddr(id string, https bool) (string, error) {
	if id != "m2" {
		return "", fmt.Errorf("no address for %s", id)
	}
	if https {
		return f.tls.Addr().String(), nil
	}
	return f.http.Addr().String(), nil
}

// TestChallengeForwarding: m1 passes challenges for the names of its https
// routes that m2 issues to m2, and nothing else; answers and splices are
// bounded in size, time and number.
func TestChallengeForwarding(t *testing.T) {
	st := openStore(t)
	put(t, st, ingressMachine(t, "m1"))
	put(t, st, ingressMachine(t, "m2"))
	name := nameIssuedBy("m2", []string{"m1", "m2"})
	// A foreign name that m2 would issue too: only the route decides.
	foreign := "evil-" + nameIssuedBy("m2", []string{"m1", "m2"})
	for i := 0; issuerFor(foreign, []string{"m1", "m2"}) != "m2"; i++ {
		foreign = fmt.Sprintf("evil%d.test", i)
	}
	f := startFakeIssuer(t)
	// No ACME directory answers here; m1 never orders (m2 issues).
	in := startIngress(t, st, func(c *Config) {
		c.ACME = ACMEConfig{Directory: "https://127.0.0.1:1/dir"}
		c.PeerAddr = f.peerAddr
	})
	in.certs.fwdTimeout = time.Second
	plain := "plain-" + foreign
	put(t, st, &record.Service{Name: "web", Ports: []string{name + ":8080/https", plain + ":8080/http"}})
	eventually(t, "routes", func() bool { return len(in.Routes()) == 2 })

	client := noRedirect
	challenge := func(method, host, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+in.HTTPAddr().String()+acmeChallengePrefix+token, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, host, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tok := "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	for _, c := range []struct {
		what, method, host, token string
		forwarded                 bool
	}{
		{"a name no route publishes", "GET", foreign, tok, false},
		{"a name of an http-only route", "GET", plain, tok, false},
		{"a POST", "POST", name, tok, false},
		{"a path that is no token", "GET", name, "a.b", false},
		{"an overlong token", "GET", name, strings.Repeat("a", 200), false},
		{"the https route's name", "GET", name, tok, true},
	} {
		before := f.requests.Load()
		code, body := challenge(c.method, c.host, c.token)
		got := f.requests.Load() > before
		if got != c.forwarded {
			t.Errorf("%s: forwarded %v, want %v (status %d)", c.what, got, c.forwarded, code)
		}
		if c.forwarded && (code != 200 || body != "keyauth-for-"+name) {
			t.Errorf("%s: %d %q", c.what, code, body)
		}
	}

	// A huge answer is cut at the bound.
	f.mode.Store("huge")
	if _, body := challenge("GET", name, tok); len(body) > maxChallengeAnswer {
		t.Errorf("issuer's answer of %d bytes passed on, at most %d", len(body), maxChallengeAnswer)
	}
	// A hanging issuer: the forward ends at the timeout.
	f.mode.Store("hang")
	start := time.Now()
	if code, _ := challenge("GET", name, tok); code != http.StatusBadGateway {
		t.Errorf("hanging issuer: status %d, want 502", code)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a forward to a hanging issuer took %v (timeout 1 s)", d)
	}
	// No more than maxChallengeForwards at once: with that many hanging,
	// one more is refused at once.
	in.certs.fwdTimeout = 5 * time.Second
	var wg sync.WaitGroup
	hung := f.requests.Load()
	for range maxChallengeForwards {
		wg.Add(1)
		go func() { defer wg.Done(); challenge("GET", name, tok) }()
	}
	eventually(t, "forwards in flight", func() bool { return f.requests.Load()-hung == maxChallengeForwards })
	start = time.Now()
	if code, _ := challenge("GET", name, tok); code != http.StatusServiceUnavailable {
		t.Errorf("forward beyond the bound: status %d, want 503", code)
	}
	if time.Since(start) > time.Second {
		t.Errorf("the refusal waited %v", time.Since(start))
	}
	wg.Wait()
	f.mode.Store("answer")
	if code, _ := challenge("GET", name, tok); code != 200 {
		t.Errorf("after the burst: status %d", code)
	}

	// TLS-ALPN: a hello for a foreign name is not spliced; one for the
	// route's name is, and the issuer's flood is cut at the bound.
	alpn := func(sni string) (int, error) {
		c, err := net.DialTimeout("tcp", in.HTTPSAddr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(c, &tls.Config{ServerName: sni, NextProtos: []string{acmeTLSALPN}, InsecureSkipVerify: true})
		go tc.Handshake() // sends the ClientHello; the answer is read raw below
		n, err := io.Copy(io.Discard, c)
		return int(n), err
	}
	before := f.conns.Load()
	alpn(foreign)
	if f.conns.Load() != before {
		t.Error("a TLS-ALPN hello for a foreign name was spliced to the issuer")
	}
	start = time.Now()
	n, _ := alpn(name)
	if f.conns.Load() != before+1 {
		t.Errorf("TLS-ALPN hello for %s: %d splices, want 1", name, f.conns.Load()-before)
	}
	if n > maxSpliceOut {
		t.Errorf("splice passed %d bytes from the issuer, at most %d", n, maxSpliceOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("splice lasted %v", d)
	}
}
