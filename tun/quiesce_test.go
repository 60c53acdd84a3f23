package tun

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects a logger's output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestQuiesce: a joiner's temporary device (a) makes one HTTP call to
// the issuer (b), which closes first, as the join call does, and closes
// right after the answer. WireGuard on b restarts a handshake 15 s after
// the last data it sent unless it hears from a meanwhile; a is gone, so
// that would be 18 initiations over 90 s. With Quiesce, b's last word
// from a comes after its own: no restart. Without it (a.Close right
// after the call) b restarted the handshake at 15 s in every run.
func TestQuiesce(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out WireGuard's 15 s handshake restart")
	}
	ctx := context.Background()
	ka, _ := GeneratePrivateKey()
	kb, _ := GeneratePrivateKey()
	var blog lockedBuffer
	open := func(k Key, addr string, port uint16, log *slog.Logger) *Device {
		d, err := Open(ctx, Config{PrivateKey: k, Address: netip.MustParseAddr(addr), ListenPort: port, Userspace: true, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	a := open(ka, "10.210.1.1", 51977, slog.New(slog.DiscardHandler))
	b := open(kb, "10.210.2.1", 51978, slog.New(slog.NewTextHandler(&blog, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err := b.SetPeer(Peer{PublicKey: ka.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.1.1/32")}}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPeer(Peer{PublicKey: kb.PublicKey(), Endpoint: netip.MustParseAddrPort("127.0.0.1:51978"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.2.1/32")}}); err != nil {
		t.Fatal(err)
	}
	l, err := b.Listen(ctx, "tcp", ":7001")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, strings.Repeat("x", 2000))
	})}
	go srv.Serve(l)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return a.DialContext(ctx, network, addr)
		}}}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(cctx, "POST", "http://10.210.2.1:7001/", strings.NewReader("join"))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	if err := a.Quiesce(cctx, kb.PublicKey()); err != nil {
		t.Fatalf("Quiesce: %v", err)
	}
	t.Logf("quiesced in %v", time.Since(start).Round(time.Millisecond))
	a.Close()
	// WireGuard's restart comes KeepaliveTimeout + RekeyTimeout (15 s)
	// plus up to a third of a second of jitter after b's last data.
	time.Sleep(16 * time.Second)
	if strings.Contains(blog.String(), "Sending handshake initiation") {
		t.Errorf("b restarted the handshake with a after a quiesced and closed:\n%s", blog.String())
	}
}
