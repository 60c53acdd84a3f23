package api

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// machineDialTimeout bounds connecting to another machine's API, TLS
// handshake included.
const machineDialTimeout = 10 * time.Second

// NewMachineHTTP returns an HTTP client for other machines' APIs. Each
// connection is pinned to the identity key of the machine that owns the
// dialed mesh address (lookup), and dialed with dial, so in netstack mode
// it goes through the userspace stack.
func NewMachineHTTP(id *Identity, lookup func(netip.Addr) (ed25519.PublicKey, error),
	dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	transport := &http.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, fmt.Errorf("machine API address %q is not IP:port: %w", addr, err)
			}
			want, err := lookup(ap.Addr())
			if err != nil {
				return nil, fmt.Errorf("identity of the machine at %v: %w", ap.Addr(), err)
			}
			// Without a bound, a dial to a machine across a partition
			// waits out TCP's SYN retries (about two minutes) and holds
			// whatever waits on it, such as a block fetch that could ask
			// another machine. 10 s covers a lost WireGuard handshake
			// (retried after 5 s) on a slow relayed path.
			ctx, cancel := context.WithTimeout(ctx, machineDialTimeout)
			defer cancel()
			raw, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			conn := tls.Client(raw, ClientTLS(id, want))
			if err := conn.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, fmt.Errorf("TLS with machine at %v: %w", ap, err)
			}
			return conn, nil
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	return &http.Client{Transport: transport}
}

// ServeMachineAPI serves handler on ln with mutual TLS: only machines that
// auth knows get past the handshake, and every request is re-checked.
// The server's own complaints (failed or abandoned TLS handshakes, which
// every agent stop and every refused caller causes) go to log at debug
// level, not to standard error.
func ServeMachineAPI(ctx context.Context, ln net.Listener, id *Identity, auth Authorizer, handler http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           CallerMiddleware(auth, handler),
		TLSConfig:         ServerTLS(id, auth),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err := srv.ServeTLS(ln, "", "")
	if ctx.Err() != nil {
		return nil
	}
	return err
}
