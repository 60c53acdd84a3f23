package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// TLS-ALPN-01 validation reaches whichever ingress machine DNS points the
// CA at, on :443, and only the issuer of the name holds the challenge
// certificate. A TLS connection cannot be redirected like an HTTP request,
// so the other machines pass the whole connection on: the listener
// records the bytes the TLS stack reads until the ClientHello is known;
// for an acme-tls/1 hello for a name issued elsewhere, the connection is
// taken from the TLS stack and spliced, recorded bytes first, to the
// issuer's HTTPS port over the mesh.

const acmeTLSALPN = "acme-tls/1"

// maxRecord bounds what is recorded of a connection's start: a
// ClientHello fits easily.
const maxRecord = 16 << 10

var errHandedOff = errors.New("connection handed to the issuer of its name")

// recordingListener wraps accepted connections in recordingConns.
type recordingListener struct{ net.Listener }

func (l recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, recording: true}, nil
}

// recordingConn records what is read until stop or handOff. After
// handOff the TLS stack's writes and close go nowhere: the splice owns
// the connection.
type recordingConn struct {
	net.Conn
	mu        sync.Mutex
	recording bool
	rec       []byte
	handedOff atomic.Bool
	// stopped is set once recording ended without a hand-off: from then
	// on reads go straight to the connection, without the mutex.
	stopped atomic.Bool
}

func (c *recordingConn) Read(b []byte) (int, error) {
	if c.stopped.Load() {
		return c.Conn.Read(b)
	}
	if c.handedOff.Load() {
		return 0, io.EOF
	}
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	if c.recording {
		if len(c.rec)+n > maxRecord {
			c.recording, c.rec = false, nil
		} else {
			c.rec = append(c.rec, b[:n]...)
		}
	}
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) Write(b []byte) (int, error) {
	if c.handedOff.Load() {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *recordingConn) Close() error {
	if c.handedOff.Load() {
		return nil
	}
	return c.Conn.Close()
}

func (c *recordingConn) stop() {
	c.mu.Lock()
	c.recording, c.rec = false, nil
	c.stopped.Store(!c.handedOff.Load())
	c.mu.Unlock()
}

// handOff takes the connection from the TLS stack and returns what was
// read so far; false when the start was not recorded completely.
func (c *recordingConn) handOff() ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.recording {
		return nil, false
	}
	c.handedOff.Store(true)
	rec := c.rec
	c.recording, c.rec = false, nil
	return rec, true
}

// getConfigForClient passes acme-tls/1 handshakes for names another
// machine issues to that machine, and stops recording every other
// connection.
func (cm *certManager) getConfigForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	rc, ok := hello.Conn.(*recordingConn)
	if !ok {
		return nil, nil
	}
	if !slices.Contains(hello.SupportedProtos, acmeTLSALPN) || fromMesh(rc.RemoteAddr()) {
		// A connection from the mesh was forwarded by another ingress
		// machine: never pass it on again.
		rc.stop()
		return nil, nil
	}
	if !cm.in.table.Load().ordersFor(hello.ServerName, cm.in.cfg.ACME.OnDemand) {
		// Not a name of ours: never spliced anywhere (the handshake then
		// fails here, as there is no certificate for it).
		rc.stop()
		return nil, nil
	}
	issuer := cm.in.issuerOf(hello.ServerName)
	if issuer == cm.in.cfg.MachineID {
		rc.stop()
		return nil, nil
	}
	addr, err := cm.in.peerAddr(issuer, true)
	if err != nil {
		rc.stop()
		cm.in.log.Warn("cannot forward TLS-ALPN challenge", "host", hello.ServerName, "issuer", issuer, "err", err)
		return nil, nil
	}
	if !cm.takeSlot() {
		rc.stop()
		cm.in.log.Warn("TLS-ALPN challenge not forwarded: too many in flight", "host", hello.ServerName, "max", maxChallengeForwards)
		return nil, errors.New("too many ACME challenges in flight")
	}
	rec, ok := rc.handOff()
	if !ok {
		cm.freeSlot()
		return nil, nil
	}
	cm.in.log.Info("forwarding TLS-ALPN challenge to the issuer", "host", hello.ServerName, "issuer", issuer, "addr", addr)
	go cm.splice(rc.Conn, rec, addr)
	return nil, errHandedOff
}

// splice passes a handed-off connection to the issuer, bounded in time
// and bytes each way (a validation is one handshake), and frees its slot.
func (cm *certManager) splice(client net.Conn, start []byte, addr string) {
	defer cm.freeSlot()
	defer client.Close()
	deadline := time.Now().Add(cm.fwdTimeout)
	ctx, cancel := context.WithDeadline(cm.ctx, deadline)
	up, err := cm.in.fwd.transport.DialContext(ctx, "tcp", addr)
	cancel()
	if err != nil {
		cm.in.log.Warn("forward TLS-ALPN challenge", "addr", addr, "err", err)
		return
	}
	defer up.Close()
	client.SetDeadline(deadline)
	up.SetDeadline(deadline)
	if len(start) > maxSpliceIn {
		return
	}
	if _, err := up.Write(start); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.CopyN(up, client, int64(maxSpliceIn-len(start))); done <- struct{}{} }()
	go func() { io.CopyN(client, up, maxSpliceOut); done <- struct{}{} }()
	<-done
}

// fromMesh: the peer is a mesh address.
func fromMesh(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && meshaddr.Contains(ap.Addr())
}
