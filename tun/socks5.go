package tun

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// SOCKS5 (RFC 1928) constants for the subset served here: no
// authentication, CONNECT only.
const (
	socksVersion       = 5
	socksMethodNoAuth  = 0x00
	socksMethodNone    = 0xff
	socksCmdConnect    = 1
	socksAtypIPv4      = 1
	socksAtypDomain    = 3
	socksAtypIPv6      = 4
	socksRepSucceeded  = 0
	socksRepFailure    = 1
	socksRepNotAllowed = 2
	socksRepNetUnreach = 3
	socksRepHostUnrch  = 4
	socksRepRefused    = 5
	socksRepCmdUnsupp  = 7
	socksRepAtypUnsupp = 8

	// socksHandshakeTimeout bounds the greeting and request, so a client
	// that connects and says nothing does not hold a goroutine forever.
	socksHandshakeTimeout = 10 * time.Second
)

// socksError is a failed request with the reply code the client gets.
type socksError struct {
	rep byte
	err error
}

func (e *socksError) Error() string { return e.err.Error() }
func (e *socksError) Unwrap() error { return e.err }

// ServeSOCKS5 accepts SOCKS5 CONNECT (no authentication; IPv4, IPv6 and
// domain-name addresses) on ln and connects through d, which decides
// what may be reached and resolves names; it returns when ctx is done
// or ln fails. A refused destination gets reply 2 ("not allowed by
// ruleset"), a name that does not resolve 4 ("host unreachable").
//
// It is how host programs reach the mesh, which in netstack mode has no
// kernel interface. ln should be on loopback: anyone who can connect to
// it can reach the mesh as this machine.
func ServeSOCKS5(ctx context.Context, ln net.Listener, d *MeshDialer, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "socks5", "listen", ln.Addr().String())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lim := newLimitListener(ln, proxyMaxConns)
	stop := context.AfterFunc(ctx, func() { lim.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	var pool bufPool
	for {
		c, err := lim.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("socks5 accept on %v: %w", ln.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serveSOCKS5Conn(ctx, c, d, &pool); err != nil {
				logger.Debug("socks5 request failed", "client", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// serveSOCKS5Conn negotiates one client, dials and relays until either side
// is done. It always closes c.
func serveSOCKS5Conn(ctx context.Context, c net.Conn, d *MeshDialer, pool *bufPool) error {
	c.SetDeadline(time.Now().Add(socksHandshakeTimeout))
	target, err := readSOCKS5Request(c)
	if err != nil {
		var se *socksError
		if errors.As(err, &se) {
			writeSOCKS5Reply(c, se.rep, nil)
		}
		c.Close()
		return err
	}
	host := target.host
	if host == "" {
		host = target.addr.String()
	}
	ap, err := d.Target(ctx, host, target.port)
	if err != nil {
		rep := byte(socksRepHostUnrch)
		if errors.Is(err, ErrNotMesh) {
			rep = socksRepNotAllowed
		}
		writeSOCKS5Reply(c, rep, nil)
		c.Close()
		return fmt.Errorf("socks5 connect %s: %w", host, err)
	}
	up, err := d.dial(ctx, ap)
	if err != nil {
		writeSOCKS5Reply(c, dialErrorReply(err), nil)
		c.Close()
		return fmt.Errorf("socks5 connect %s: %w", ap, err)
	}
	if err := writeSOCKS5Reply(c, socksRepSucceeded, up.LocalAddr()); err != nil {
		up.Close()
		c.Close()
		return fmt.Errorf("socks5 reply to %v: %w", c.RemoteAddr(), err)
	}
	c.SetDeadline(time.Time{})
	a, b := idleConns(c, up, proxyTunnelIdle)
	splice(ctx, a, b, pool)
	return nil
}

// socksTarget is the destination of a CONNECT: an address or a name.
type socksTarget struct {
	addr netip.Addr // valid unless host is set
	host string
	port uint16
}

// readSOCKS5Request reads the greeting, answers it, and reads the request.
// Errors the client should hear about are *socksError.
func readSOCKS5Request(r io.ReadWriter) (socksTarget, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return socksTarget{}, fmt.Errorf("socks5 greeting: %w", err)
	}
	if hdr[0] != socksVersion {
		return socksTarget{}, fmt.Errorf("socks5 greeting: version %d is not 5", hdr[0])
	}
	if hdr[1] == 0 {
		return socksTarget{}, fmt.Errorf("socks5 greeting: no authentication methods offered")
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return socksTarget{}, fmt.Errorf("socks5 greeting methods: %w", err)
	}
	method := byte(socksMethodNone)
	for _, m := range methods {
		if m == socksMethodNoAuth {
			method = socksMethodNoAuth
		}
	}
	if _, err := r.Write([]byte{socksVersion, method}); err != nil {
		return socksTarget{}, fmt.Errorf("socks5 method reply: %w", err)
	}
	if method == socksMethodNone {
		return socksTarget{}, fmt.Errorf("socks5 greeting: client does not offer no-authentication (methods %v)", methods)
	}

	var req [4]byte
	if _, err := io.ReadFull(r, req[:]); err != nil {
		return socksTarget{}, fmt.Errorf("socks5 request: %w", err)
	}
	if req[0] != socksVersion {
		return socksTarget{}, fmt.Errorf("socks5 request: version %d is not 5", req[0])
	}
	if req[1] != socksCmdConnect {
		return socksTarget{}, &socksError{socksRepCmdUnsupp, fmt.Errorf("socks5 request: command %d is not CONNECT", req[1])}
	}
	var t socksTarget
	switch req[3] {
	case socksAtypIPv4:
		var a [4]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return socksTarget{}, fmt.Errorf("socks5 request address: %w", err)
		}
		t.addr = netip.AddrFrom4(a)
	case socksAtypIPv6:
		var a [16]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return socksTarget{}, fmt.Errorf("socks5 request address: %w", err)
		}
		t.addr = netip.AddrFrom16(a)
	case socksAtypDomain:
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return socksTarget{}, fmt.Errorf("socks5 request name length: %w", err)
		}
		if l[0] == 0 {
			return socksTarget{}, &socksError{socksRepHostUnrch, fmt.Errorf("socks5 request: empty host name")}
		}
		name := make([]byte, l[0])
		if _, err := io.ReadFull(r, name); err != nil {
			return socksTarget{}, fmt.Errorf("socks5 request name: %w", err)
		}
		t.host = string(name)
	default:
		return socksTarget{}, &socksError{socksRepAtypUnsupp, fmt.Errorf("socks5 request: address type %d is not supported", req[3])}
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return socksTarget{}, fmt.Errorf("socks5 request port: %w", err)
	}
	t.port = binary.BigEndian.Uint16(p[:])
	return t, nil
}

// writeSOCKS5Reply sends a reply with the bound address, or 0.0.0.0:0.
func writeSOCKS5Reply(w io.Writer, rep byte, bound net.Addr) error {
	ap := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if bound != nil {
		if p, err := netip.ParseAddrPort(bound.String()); err == nil {
			ap = netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
		}
	}
	b := make([]byte, 0, 22)
	b = append(b, socksVersion, rep, 0)
	if ap.Addr().Is4() {
		a := ap.Addr().As4()
		b = append(b, socksAtypIPv4)
		b = append(b, a[:]...)
	} else {
		a := ap.Addr().As16()
		b = append(b, socksAtypIPv6)
		b = append(b, a[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, ap.Port())
	_, err := w.Write(b)
	return err
}

// dialErrorReply maps a dial error to the closest SOCKS5 reply code.
func dialErrorReply(err error) byte {
	msg := err.Error()
	switch {
	case containsAny(msg, "refused", "reset"):
		return socksRepRefused
	case containsAny(msg, "network is unreachable", "no route"):
		return socksRepNetUnreach
	case errors.Is(err, context.DeadlineExceeded), containsAny(msg, "timed out", "timeout"):
		return socksRepHostUnrch
	default:
		return socksRepFailure
	}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
