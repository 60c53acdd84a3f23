package tun

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestNetstackSetExposed changes the exposed ports of a running stack: an
// added port is forwarded at once; a removed one is closed at once, the
// connection already forwarded to it included, and refuses new ones.
func TestNetstackSetExposed(t *testing.T) {
	first := nsHostTCPEcho(t)
	later := nsHostTCPEcho(t)
	a, b := newNSPair(t, implOurs, implOurs, []ExposedPort{{Port: first, Proto: "tcp"}})
	to := func(port uint16) string { return netip.AddrPortFrom(nsAddrB, port).String() }
	refused := func(t *testing.T, port uint16) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		c, err := a.dial(ctx, "tcp", to(port))
		if err == nil {
			c.Close()
			t.Fatalf("dial to port %d succeeded, want refused", port)
		}
		if ctx.Err() != nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("dial to port %d: %v, want a quick refusal", port, err)
		}
	}

	refused(t, later)
	held, err := a.dial(nsContext(t), "tcp", to(first))
	if err != nil {
		t.Fatalf("dial exposed port: %v", err)
	}
	defer held.Close()
	nsEchoOnce(t, held, []byte("before"))

	if err := b.ns.setExposed([]ExposedPort{{Port: later, Proto: "tcp"}}); err != nil {
		t.Fatal(err)
	}
	t.Run("added port is forwarded", func(t *testing.T) {
		c, err := a.dial(nsContext(t), "tcp", to(later))
		if err != nil {
			t.Fatalf("dial newly exposed port: %v", err)
		}
		defer c.Close()
		nsEchoOnce(t, c, []byte("after"))
	})
	t.Run("removed port refuses new connections", func(t *testing.T) { refused(t, first) })
	t.Run("connection to the removed port is closed", func(t *testing.T) {
		held.SetDeadline(time.Now().Add(5 * time.Second))
		held.Write([]byte("anyone?"))
		n, err := held.Read(make([]byte, 16))
		if err == nil {
			t.Fatalf("read %d bytes on a connection whose port was removed", n)
		}
		if strings.Contains(err.Error(), "timeout") {
			t.Fatalf("connection still open after its port was removed: %v", err)
		}
		if err != io.EOF && !strings.Contains(err.Error(), "reset") {
			t.Logf("closed with %v", err)
		}
	})
	t.Run("bad port refused, old set kept", func(t *testing.T) {
		if err := b.ns.setExposed([]ExposedPort{{Port: 0, Proto: "tcp"}}); err == nil {
			t.Fatal("port 0 accepted")
		}
		c, err := a.dial(nsContext(t), "tcp", to(later))
		if err != nil {
			t.Fatalf("after a refused change the exposed port is gone: %v", err)
		}
		c.Close()
	})
}
