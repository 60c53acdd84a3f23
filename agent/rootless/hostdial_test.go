package rootless

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
	"golang.org/x/sys/unix"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    request
		wantErr string
	}{
		{in: "1 tcp 8080", want: request{id: 1, proto: "tcp", port: 8080}},
		{in: "4294967295 udp 65535", want: request{id: 4294967295, proto: "udp", port: 65535}},
		{in: strings.Repeat("9", maxRequest+1), wantErr: "longer than 32 bytes"},
		{in: "1 tcp", wantErr: "is not 'ID PROTO PORT'"},
		{in: "1  tcp 80", wantErr: "is not 'ID PROTO PORT'"},
		{in: "0 tcp 80", wantErr: "id \"0\""},
		{in: "4294967296 tcp 80", wantErr: "id \"4294967296\""},
		{in: "x tcp 80", wantErr: "id \"x\""},
		{in: "7 sctp 80", want: request{id: 7, proto: "sctp"}, wantErr: "neither tcp nor udp"},
		{in: "7 tcp 0", want: request{id: 7, proto: "tcp"}, wantErr: "not a port"},
		{in: "7 tcp 65536", want: request{id: 7, proto: "tcp"}, wantErr: "not a port"},
		{in: "7 tcp -1", want: request{id: 7, proto: "tcp"}, wantErr: "not a port"},
	} {
		got, err := parseRequest([]byte(tc.in))
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("parseRequest(%q) error %v, want %q", tc.in, err, tc.wantErr)
		}
		if got != tc.want {
			t.Errorf("parseRequest(%q) = %+v, want %+v (the id is kept to answer)", tc.in, got, tc.want)
		}
	}
}

// helperPair is a HostDialServer on one end of a real SOCK_SEQPACKET
// socketpair, allowing the TCP ports in allowed, and the agent's raw end.
func helperPair(t *testing.T, allowed ...uint16) (agent *net.UnixConn, served chan error) {
	t.Helper()
	var exposed []tun.ExposedPort
	for _, p := range allowed {
		exposed = append(exposed, tun.ExposedPort{Port: p, Proto: "tcp"})
	}
	return helperPairExposed(t, exposed...)
}

// helperPairExposed is helperPair allowing the ports of exposed, as the
// real helper allows those of hostnet.json.
func helperPairExposed(t *testing.T, exposed ...tun.ExposedPort) (agent *net.UnixConn, served chan error) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	srvConn, agentConn := conn(fds[0]), conn(fds[1])
	srv := &HostDialServer{Allowed: func(proto string, port uint16) error {
		for _, p := range exposed {
			if proto == p.Proto && port == p.Port {
				return nil
			}
		}
		return fmt.Errorf("port %d/%s is not exposed", port, proto)
	}}
	served = make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { served <- srv.Serve(ctx, srvConn) }()
	t.Cleanup(func() {
		cancel()
		agentConn.Close()
		<-served
	})
	return agentConn, served
}

// echoServer listens on 127.0.0.1 and echoes each connection.
func echoServer(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func roundTrip(c net.Conn, msg string) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

// closedPort is a 127.0.0.1 port nothing listens on.
func closedPort(t *testing.T) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	return port
}

func TestHostDialer(t *testing.T) {
	port := echoServer(t)
	closed := closedPort(t)
	agentConn, _ := helperPair(t, port, closed)
	d := NewHostDialer(agentConn)
	ctx := context.Background()

	c, err := d.Dial(ctx, "tcp", port)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello" {
		t.Fatalf("through the helper's socket: %q, %v", got, err)
	}
	c.Close()

	for _, tc := range []struct {
		proto string
		port  uint16
		want  string
	}{
		{"tcp", port + 1, "is not exposed"},
		{"udp", port, "is not exposed"},
		{"tcp", closed, "connection refused"},
	} {
		if c, err := d.Dial(ctx, tc.proto, tc.port); err == nil || !strings.Contains(err.Error(), tc.want) {
			if c != nil {
				c.Close()
			}
			t.Errorf("Dial %s %d: %v, want an error saying %q", tc.proto, tc.port, err, tc.want)
		}
	}
}

// TestHostDialServerBadInput: what the agent's end might send wrong is
// answered with an error, never a socket, and the helper serves on.
func TestHostDialServerBadInput(t *testing.T) {
	port := echoServer(t)
	agentConn, served := helperPair(t, port)
	reply := func(req []byte) (string, int) {
		t.Helper()
		if _, err := agentConn.Write(req); err != nil {
			t.Fatal(err)
		}
		agentConn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf, oob := make([]byte, maxReply+1), make([]byte, unix.CmsgSpace(4*4))
		n, oobn, _, _, err := agentConn.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatalf("no reply to %q: %v", req, err)
		}
		files := receivedFiles(oob[:oobn])
		for _, f := range files {
			f.Close()
		}
		return string(buf[:n]), len(files)
	}
	for _, tc := range []struct {
		req, want string
	}{
		{strings.Repeat("1", 4096), "0 err request longer than 32 bytes"},
		{"5 tcp", "0 err request \"5 tcp\" is not 'ID PROTO PORT'"},
		{"6 icmp 1", "6 err request \"6 icmp 1\": protocol \"icmp\" is neither tcp nor udp"},
		{"7 tcp 99999", "7 err request \"7 tcp 99999\": \"99999\" is not a port 1..65535"},
		{"8 tcp " + strconv.Itoa(int(port+1)), fmt.Sprintf("8 err port %d/tcp is not exposed", port+1)},
	} {
		if got, files := reply([]byte(tc.req)); got != tc.want || files != 0 {
			t.Errorf("reply to %.40q: %q with %d sockets, want %q and none", tc.req, got, files, tc.want)
		}
	}
	if got, files := reply([]byte("9 tcp " + strconv.Itoa(int(port)))); got != "9 ok" || files != 1 {
		t.Errorf("reply to a good request after bad ones: %q with %d sockets", got, files)
	}
	// The agent's end closing ends the helper.
	agentConn.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after the agent's end closed: %v", err)
		}
		served <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still runs after the agent's end closed")
	}
}

// TestHostDialerHelperGone: dials fail, naming the helper, once its end
// is closed.
func TestHostDialerHelperGone(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[1]), "agent")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	d := NewHostDialer(c.(*net.UnixConn))
	defer d.Close()
	unix.Close(fds[0])
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := d.Dial(context.Background(), "tcp", 80)
		if err != nil && strings.Contains(err.Error(), "host-side helper") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Dial with the helper gone: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := d.Dial(context.Background(), "tcp", 80); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Dial after the helper went: %v", err)
	}
}
