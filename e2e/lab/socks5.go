package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// dialTCP connects to target, through a SOCKS5 proxy (RFC 1928, no
// authentication, CONNECT) when proxy is valid. That is how host processes
// on a netstack machine reach the mesh. A client of our own keeps the lab
// free of a proxy dependency and lets errors name the step that failed.
func dialTCP(ctx context.Context, target, proxy netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	if !proxy.IsValid() {
		c, err := d.DialContext(ctx, "tcp", target.String())
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", target, err)
		}
		return c, nil
	}
	c, err := d.DialContext(ctx, "tcp", proxy.String())
	if err != nil {
		return nil, fmt.Errorf("dial SOCKS5 proxy %s: %w", proxy, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := socks5Connect(c, target); err != nil {
		c.Close()
		return nil, fmt.Errorf("SOCKS5 %s via %s: %w", target, proxy, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func socks5Connect(c net.Conn, target netip.AddrPort) error {
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		return fmt.Errorf("method selection: %w", err)
	}
	if sel[0] != 5 || sel[1] != 0 {
		return fmt.Errorf("proxy refused no-auth method: reply %x", sel)
	}
	req := []byte{5, 1, 0}
	if target.Addr().Is4() {
		a := target.Addr().As4()
		req = append(append(req, 1), a[:]...)
	} else {
		a := target.Addr().As16()
		req = append(append(req, 4), a[:]...)
	}
	req = binary.BigEndian.AppendUint16(req, target.Port())
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("connect request: %w", err)
	}
	var head [4]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return fmt.Errorf("connect reply: %w", err)
	}
	if head[0] != 5 {
		return fmt.Errorf("connect reply: version %d", head[0])
	}
	if head[1] != 0 {
		return &SOCKSError{Code: head[1]}
	}
	var skip int
	switch head[3] {
	case 1:
		skip = 4 + 2
	case 4:
		skip = 16 + 2
	case 3:
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return fmt.Errorf("connect reply: %w", err)
		}
		skip = int(n[0]) + 2
	default:
		return fmt.Errorf("connect reply: address type %d", head[3])
	}
	if _, err := io.ReadFull(c, make([]byte, skip)); err != nil {
		return fmt.Errorf("connect reply address: %w", err)
	}
	return nil
}

// SOCKSError is a SOCKS5 proxy's refusal to connect, with its reply code.
type SOCKSError struct{ Code byte }

func (e *SOCKSError) Error() string {
	return fmt.Sprintf("proxy could not connect: reply code %d (%s)", e.Code, socksReply(e.Code))
}

// isRefused tells an active refusal (RST, or a SOCKS5 "connection refused")
// from a timeout or other failure.
func isRefused(err error) bool {
	var se *SOCKSError
	if errors.As(err, &se) {
		return se.Code == 5
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// socksCode returns the SOCKS5 reply code in err, or 0.
func socksCode(err error) int {
	var se *SOCKSError
	if errors.As(err, &se) {
		return int(se.Code)
	}
	return 0
}

func socksReply(code byte) string {
	names := map[byte]string{
		1: "general failure", 2: "not allowed by ruleset", 3: "network unreachable",
		4: "host unreachable", 5: "connection refused", 6: "TTL expired",
		7: "command not supported", 8: "address type not supported",
	}
	if n, ok := names[code]; ok {
		return n
	}
	return "unknown"
}
