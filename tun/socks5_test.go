package tun

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestReadSOCKS5Request(t *testing.T) {
	greet := []byte{5, 1, 0}
	req := func(atyp byte, addr ...byte) []byte {
		b := append([]byte{5, 1, 0, atyp}, addr...)
		return append(b, 0x1f, 0x90) // port 8080
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name      string
		in        []byte
		want      socksTarget
		wantErr   string
		wantReply []byte // what the server wrote before failing or succeeding
		wantRep   int    // reply code for *socksError, -1 if none
	}{
		{"ipv4", cat(greet, req(1, 10, 210, 2, 1)), socksTarget{addr: netip.MustParseAddr("10.210.2.1"), port: 8080}, "", []byte{5, 0}, -1},
		{"domain", cat(greet, req(3, append([]byte{9}, "a.example"...)...)), socksTarget{host: "a.example", port: 8080}, "", []byte{5, 0}, -1},
		{"ipv6", cat(greet, req(4, make([]byte, 16)...)), socksTarget{addr: netip.IPv6Unspecified(), port: 8080}, "", []byte{5, 0}, -1},
		{"several methods", cat([]byte{5, 3, 2, 1, 0}, req(1, 1, 2, 3, 4)), socksTarget{addr: netip.MustParseAddr("1.2.3.4"), port: 8080}, "", []byte{5, 0}, -1},
		{"socks4 greeting", []byte{4, 1, 0x1f, 0x90, 10, 0, 0, 1, 0}, socksTarget{}, "version 4", nil, -1},
		{"http request", []byte("GET / HTTP/1.1\r\n\r\n"), socksTarget{}, "version 71", nil, -1},
		{"empty", nil, socksTarget{}, "EOF", nil, -1},
		{"no methods", []byte{5, 0}, socksTarget{}, "no authentication methods", nil, -1},
		{"truncated methods", []byte{5, 3, 0}, socksTarget{}, "unexpected EOF", nil, -1},
		{"only password auth", []byte{5, 1, 2}, socksTarget{}, "does not offer no-authentication", []byte{5, 0xff}, -1},
		{"bind command", cat(greet, []byte{5, 2, 0, 1, 1, 2, 3, 4, 0, 80}), socksTarget{}, "not CONNECT", []byte{5, 0}, socksRepCmdUnsupp},
		{"udp associate", cat(greet, []byte{5, 3, 0, 1, 1, 2, 3, 4, 0, 80}), socksTarget{}, "not CONNECT", []byte{5, 0}, socksRepCmdUnsupp},
		{"bad address type", cat(greet, []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}), socksTarget{}, "address type 9", []byte{5, 0}, socksRepAtypUnsupp},
		{"empty domain", cat(greet, []byte{5, 1, 0, 3, 0, 0, 80}), socksTarget{}, "empty host name", []byte{5, 0}, socksRepHostUnrch},
		{"truncated address", cat(greet, []byte{5, 1, 0, 1, 10, 210}), socksTarget{}, "unexpected EOF", []byte{5, 0}, -1},
		{"truncated port", cat(greet, []byte{5, 1, 0, 1, 10, 210, 2, 1, 0}), socksTarget{}, "unexpected EOF", []byte{5, 0}, -1},
		{"bad request version", cat(greet, []byte{4, 1, 0, 1, 1, 2, 3, 4, 0, 80}), socksTarget{}, "version 4", []byte{5, 0}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			rw := struct {
				io.Reader
				io.Writer
			}{bytes.NewReader(tt.in), &out}
			got, err := readSOCKS5Request(rw)
			if !bytes.Equal(out.Bytes(), tt.wantReply) {
				t.Errorf("server wrote %x, want %x", out.Bytes(), tt.wantReply)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if got != tt.want {
					t.Fatalf("target %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			var se *socksError
			if isSE := errors.As(err, &se); isSE != (tt.wantRep >= 0) || (isSE && int(se.rep) != tt.wantRep) {
				t.Fatalf("error %v: socks reply %v, want %d", err, se, tt.wantRep)
			}
		})
	}
}

// nsSOCKS5Connect runs a client handshake on c (CONNECT with the given
// address type) and returns the reply code.
func nsSOCKS5Connect(t *testing.T, c net.Conn, atyp byte, addr []byte, port uint16) byte {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	msg := []byte{5, 1, 0, 5, 1, 0, atyp}
	msg = append(msg, addr...)
	msg = binary.BigEndian.AppendUint16(msg, port)
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("socks write: %v", err)
	}
	var method [2]byte
	if _, err := io.ReadFull(c, method[:]); err != nil || method != [2]byte{5, 0} {
		t.Fatalf("socks method reply %x, %v", method, err)
	}
	var reply [10]byte // IPv4 bound address in our replies
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		t.Fatalf("socks reply: %v", err)
	}
	if reply[0] != 5 || reply[3] != socksAtypIPv4 {
		t.Fatalf("socks reply %x is malformed", reply)
	}
	return reply[1]
}

// TestSOCKS5ToNetstack reaches a service inside a netstack peer through the
// SOCKS5 server, as a host process in netstack mode would.
func TestSOCKS5ToNetstack(t *testing.T) {
	a, b := newNSPair(t, implOurs, implOurs, nil)
	l, err := b.ns.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go nsEchoServe(l)

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	d := &MeshDialer{Dial: a.ns.DialContext, Domain: "internal", Resolve: testZone.resolve}
	go func() {
		served <- ServeSOCKS5(ctx, ln, d, slog.New(slog.DiscardHandler))
	}()

	connect := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	t.Run("malformed greeting", func(t *testing.T) {
		c := connect(t)
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 64)); err == nil {
			t.Fatalf("server answered %d bytes to an HTTP request instead of closing", n)
		} else if errors.Is(err, context.DeadlineExceeded) {
			t.Fatal("server kept a malformed client open")
		}
	})
	tests := []struct {
		name    string
		atyp    byte
		addr    []byte
		port    uint16
		wantRep byte
	}{
		{"ipv4", socksAtypIPv4, []byte{10, 210, 2, 1}, 8080, socksRepSucceeded},
		{"ip literal as domain", socksAtypDomain, append([]byte{10}, "10.210.2.1"...), 8080, socksRepSucceeded},
		{"closed port", socksAtypIPv4, []byte{10, 210, 2, 1}, 8081, socksRepRefused},
		{"internal name", socksAtypDomain, socksName("web.internal"), 8080, socksRepSucceeded},
		{"internal name, any case, final dot", socksAtypDomain, socksName("B.Machine.Internal."), 8080, socksRepSucceeded},
		{"address outside the mesh", socksAtypIPv4, []byte{198, 51, 100, 7}, 8080, socksRepNotAllowed},
		{"ipv6 address", socksAtypIPv6, netip.MustParseAddr("2001:db8::1").AsSlice(), 8080, socksRepNotAllowed},
		{"name outside .internal", socksAtypDomain, socksName("example.com"), 8080, socksRepNotAllowed},
		{"internal name outside the mesh", socksAtypDomain, socksName("outside.internal"), 8080, socksRepNotAllowed},
		{"unknown internal name", socksAtypDomain, socksName("nobody.internal"), 8080, socksRepHostUnrch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := connect(t)
			if rep := nsSOCKS5Connect(t, c, tt.atyp, tt.addr, tt.port); rep != tt.wantRep {
				t.Fatalf("reply code %d, want %d", rep, tt.wantRep)
			}
			if tt.wantRep == socksRepSucceeded {
				nsEchoOnce(t, c, []byte("through socks"))
				nsEchoOnceLarge(t, c, bytes.Repeat([]byte{0xa5}, 1<<20))
			}
		})
	}

	if asked := testZone.asked("example.com"); asked {
		t.Error("a name outside .internal was looked up")
	}
	cancel()
	waitServed(t, "ServeSOCKS5", served)
}

// waitServed waits for the serve function name, its context cancelled,
// to return nil on served.
func waitServed(t *testing.T, name string, served <-chan error) {
	t.Helper()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("%s after cancel: %v", name, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return after its context was cancelled", name)
	}
}

// socksName is a SOCKS5 domain address: its length, then the name.
func socksName(name string) []byte { return append([]byte{byte(len(name))}, name...) }
