package ingress

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/sealing"
)

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func openStore(t testing.TB) *crdt.Store {
	t.Helper()
	s, err := crdt.Open(context.Background(), crdt.Config{Dir: t.TempDir(), Name: "m1",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func put(t testing.TB, s *crdt.Store, r crdt.Record) {
	t.Helper()
	if err := s.Put(context.Background(), r.Key(), r); err != nil {
		t.Fatal(err)
	}
}

func del(t testing.TB, s *crdt.Store, key string) {
	t.Helper()
	if err := s.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
}

var testSecret = func() [][]byte { return [][]byte{[]byte("0123456789abcdef0123456789abcdef")} }

// sealKeyOf is machine id's sealing key in tests (from a seed made of
// its ID, as the agent derives it from the identity seed).
func sealKeyOf(t testing.TB, id string) *ecdh.PrivateKey {
	t.Helper()
	seed := sha256.Sum256([]byte(id))
	k, err := sealing.KeyFromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ingressMachine is the record of an ingress machine with its sealing key.
func ingressMachine(t testing.TB, id string) *record.Machine {
	return &record.Machine{ID: id, Roles: []string{IngressRole}, SealKey: sealing.EncodePublic(sealKeyOf(t, id).PublicKey())}
}

// startIngress runs an ingress on loopback ports.
func startIngress(t testing.TB, s State, mod func(*Config)) *Ingress {
	t.Helper()
	cfg := Config{MachineID: "m1", State: s, HTTPAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0",
		Secrets: testSecret, Log: testLog(t), FailTimeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	if cfg.SealKey == nil {
		cfg.SealKey = sealKeyOf(t, cfg.MachineID)
	}
	in, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

// backendServer is a real HTTP server on 127.0.0.N:port that names itself.
type backendServer struct {
	addr string
	srv  *http.Server
	ln   net.Listener
	seen chan *http.Request
}

func startBackend(t testing.TB, ip string, port int, name string, h http.Handler) *backendServer {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
	if err != nil {
		t.Fatal(err)
	}
	b := &backendServer{addr: ln.Addr().String(), ln: ln, seen: make(chan *http.Request, 1)}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case b.seen <- r:
			default:
			}
			io.Copy(io.Discard, r.Body)
			w.Header().Set("X-Backend", name)
			io.WriteString(w, name)
		})
	}
	b.srv = &http.Server{Handler: h}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *backendServer) close() { b.srv.Close() }

// freePort finds a port free on 127.0.0.2..9 (backends of one service
// share the container port, as containers do).
func freePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ok := true
		for n := 3; n <= 9; n++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", n, port))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no common free port on 127.0.0.2-9")
	return 0
}

func container(id, svc, ip string) *record.Container {
	return &record.Container{MachineID: "m1", ID: id, Name: svc + "-" + id, Service: svc, Address: ip, State: "running"}
}

// client sends requests for host to the ingress's http address.
func get(t testing.TB, c *http.Client, in *Ingress, host, path string) (*http.Response, string, error) {
	req, err := http.NewRequest("GET", "http://"+in.HTTPAddr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// eventually polls cond until it holds or the generous deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var noRedirect = &http.Client{Timeout: 10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
