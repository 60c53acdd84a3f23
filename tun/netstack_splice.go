package tun

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// spliceBufSize is the buffer of each direction of a spliced connection.
// Large reads let gonet hand over many segments per call and the other
// socket take them in one write; io.Copy would pick net.TCPConn.ReadFrom,
// which falls back to a 32 KB buffer for a gonet source.
const spliceBufSize = 256 << 10

// bufPool hands out spliceBufSize buffers. Each owner (a forwarder, a SOCKS5
// server) has its own, so there is no package-level state.
type bufPool struct{ p sync.Pool }

func (b *bufPool) get() *[]byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return v
	}
	buf := make([]byte, spliceBufSize)
	return &buf
}

func (b *bufPool) put(buf *[]byte) { b.p.Put(buf) }

// closeWriter is a connection that can end one direction: *net.TCPConn and
// *gonet.TCPConn both are.
type closeWriter interface {
	CloseWrite() error
}

// splice copies a to b and b to a until both directions ended or ctx is
// done, passing a half-close (FIN) on as a kernel NAT would, then closes
// both connections.
func splice(ctx context.Context, a, b net.Conn, pool *bufPool) {
	spliceWith(ctx, a, b, func() { copyHalf(a, b, pool) }, func() { copyHalf(b, a, pool) })
}

// spliceWith is splice with the copies of the two directions given: toA
// copies b to a, toB copies a to b.
func spliceWith(ctx context.Context, a, b net.Conn, toA, toB func()) {
	stop := context.AfterFunc(ctx, func() {
		a.Close()
		b.Close()
	})
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		toB()
	}()
	toA()
	<-done
	a.Close()
	b.Close()
}

// copyHalf copies src to dst. On EOF it half-closes dst; on an error it
// closes both, so the other direction does not wait forever.
func copyHalf(dst, src net.Conn, pool *bufPool) {
	bp := pool.get()
	defer pool.put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				dst.Close()
				return
			}
		}
		if rerr == nil {
			continue
		}
		if errors.Is(rerr, io.EOF) {
			if cw, ok := dst.(closeWriter); ok {
				cw.CloseWrite()
				return
			}
		}
		src.Close()
		dst.Close()
		return
	}
}
