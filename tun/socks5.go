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
	"strconv"
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
	socksRepNetUnreach = 3
	socksRepHostUnrch  = 4
	socksRepRefused    = 5
	socksRepCmdUnsupp  = 7
	socksRepAtypUnsupp = 8

	// socksHandshakeTimeout bounds the greeting and request, so a client
	// that connects and says nothing does not hold a goroutine forever.
	socksHandshakeTimeout = 10 * time.Second
	// socksDialTimeout bounds the dial through the mesh.
	socksDialTimeout = 15 * time.Second
)

// socksError is a failed request with the reply code the client gets.
type socksError struct {
	rep byte
	err error
}

func (e *socksError) Error() string { return e.err.Error() }
func (e *socksError) Unwrap() error { return e.err }

// ServeSOCKS5 accepts SOCKS5 CONNECT (no auth, IPv4 and domain addresses
// resolved with net.DefaultResolver only if not an IP) on ln and dials
// through dial; it returns when ctx is done or ln fails.
//
// It is how host processes reach the mesh in netstack mode, where the mesh
// has no kernel interface. ln should be on loopback: anyone who can connect
// to it can reach the mesh as this machine.
func ServeSOCKS5(ctx context.Context, ln net.Listener, dial func(ctx context.Context, network, addr string) (net.Conn, error), logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "socks5", "listen", ln.Addr().String())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	var pool bufPool
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("socks5 accept on %v: %w", ln.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serveSOCKS5Conn(ctx, c, dial, &pool); err != nil {
				logger.Debug("socks5 request failed", "client", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// serveSOCKS5Conn negotiates one client, dials and relays until either side
// is done. It always closes c.
func serveSOCKS5Conn(ctx context.Context, c net.Conn, dial func(ctx context.Context, network, addr string) (net.Conn, error), pool *bufPool) error {
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
	addr, err := resolveSOCKS5Target(ctx, target)
	if err != nil {
		writeSOCKS5Reply(c, socksRepHostUnrch, nil)
		c.Close()
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, socksDialTimeout)
	up, err := dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		writeSOCKS5Reply(c, dialErrorReply(err), nil)
		c.Close()
		return fmt.Errorf("socks5 connect %s: %w", addr, err)
	}
	if err := writeSOCKS5Reply(c, socksRepSucceeded, up.LocalAddr()); err != nil {
		up.Close()
		c.Close()
		return fmt.Errorf("socks5 reply to %v: %w", c.RemoteAddr(), err)
	}
	c.SetDeadline(time.Time{})
	splice(ctx, c, up, pool)
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

// resolveSOCKS5Target returns IP:PORT, resolving a name (preferring IPv4,
// which is what the mesh carries) unless it is an IP literal.
func resolveSOCKS5Target(ctx context.Context, t socksTarget) (string, error) {
	if t.host == "" {
		return netip.AddrPortFrom(t.addr.Unmap(), t.port).String(), nil
	}
	if ip, err := netip.ParseAddr(t.host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), t.port).String(), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", t.host)
	if err != nil {
		return "", fmt.Errorf("socks5 resolve %q: %w", t.host, err)
	}
	best := netip.Addr{}
	for _, ip := range ips {
		ip = ip.Unmap()
		if ip.Is4() {
			best = ip
			break
		}
		if !best.IsValid() {
			best = ip
		}
	}
	if !best.IsValid() {
		return "", fmt.Errorf("socks5 resolve %q: no addresses", t.host)
	}
	return net.JoinHostPort(best.String(), strconv.Itoa(int(t.port))), nil
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
