package agent

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// TestHandover: a socket passed on keeps listening (a connection made
// between the two processes waits in the backlog), the next Listen on its
// address takes it over, and Accept waits until the routes are served.
func TestHandover(t *testing.T) {
	old, err := NewHandover("")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := old.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The address is what the config names; a port 0 config would not
	// be passed on, so key it by the real one for the test.
	addr := ln.Addr().String()
	old.mu.Lock()
	old.live[addr] = old.live["127.0.0.1:0"]
	delete(old.live, "127.0.0.1:0")
	old.mu.Unlock()
	spec, err := old.Pass(2)
	if err != nil || !strings.HasPrefix(spec, "routes=2;"+addr+"=") {
		t.Fatalf("spec %q, %v", spec, err)
	}
	ln.Close() // the old process's ingress stops
	// A client arrives while no one accepts: it waits in the backlog.
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial during the handover: %v", err)
	}
	defer conn.Close()

	next, err := NewHandover(spec)
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := next.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln2.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	select {
	case err := <-accepted:
		t.Fatalf("accepted before the routes were served: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	served := 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go next.waitRoutes(ctx, func() int { served++; return served })
	select {
	case err := <-accepted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not accepted once the routes were served")
	}
}

func TestNewHandoverRefuses(t *testing.T) {
	for _, spec := range []string{"routes", "routes=x", ":80=1", ":80=-3"} {
		if _, err := NewHandover(spec); err == nil {
			t.Errorf("%q accepted", spec)
		}
	}
}
