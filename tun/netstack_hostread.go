package tun

import (
	"context"
	"fmt"
	"io"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// hostReadMax bounds what one endpoint Write takes from the host socket:
// as much as the old splice buffer held, so the stack still gets large
// writes to segment, without reserving its whole send buffer at once.
const hostReadMax = 256 << 10

// socketPayload is a tcpip.Payloader that reads straight from a host
// socket's file descriptor. gVisor copies a payload into its send buffer
// anyway; reading the socket into that buffer directly saves the copy
// through an intermediate one (the splice buffer), and each read is at most
// one 64 KB buffer chunk, so it stays a short system call.
//
// Its length must be exact: gVisor reads until it has Len bytes and takes
// an early io.EOF for "nothing yet" (it loops), so n is what FIONREAD said
// the socket holds, and a read that comes up short is an error that makes
// gVisor drop the payload (and the caller the connection).
type socketPayload struct {
	fd  int
	n   int   // bytes the socket holds (up to hostReadMax) and not read yet
	err error // a failed read
}

func (p *socketPayload) Len() int { return p.n }

func (p *socketPayload) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.n == 0 {
		return 0, io.EOF
	}
	if len(b) == 0 {
		// gVisor probes with an empty read before each chunk.
		return 0, nil
	}
	b = b[:min(len(b), p.n)]
	for {
		n, err := rawRead(p.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			p.err = fmt.Errorf("read: %w", err)
			return 0, p.err
		case n == 0:
			p.err = fmt.Errorf("read: end of stream %d bytes before what FIONREAD announced", p.n)
			return 0, p.err
		}
		p.n -= n
		return n, nil
	}
}

// rawRead is read(2) without telling the Go scheduler: the socket is
// non-blocking and a read is at most one 64 KB chunk, so the call is short,
// and a regular system call that outlasts sysmon's 20 µs tick hands this
// thread's P to another thread. On an agent with one core (GOMAXPROCS 1)
// that hand-off, and the thread wake-ups it costs, were the largest
// scheduling cost on the netstack-sending path.
func rawRead(fd int, b []byte) (int, error) {
	n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// socketReadable says how many bytes (up to hostReadMax) the socket fd
// holds, and whether its stream ended (when it holds none).
func socketReadable(fd int) (n int, eof bool, err error) {
	var avail int32
	if _, _, errno := unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCINQ, uintptr(unsafe.Pointer(&avail))); errno != 0 {
		return 0, false, fmt.Errorf("FIONREAD: %w", errno)
	}
	if avail > 0 {
		return min(int(avail), hostReadMax), false, nil
	}
	// Nothing queued: either nothing yet or the end of the stream,
	// which a peek tells apart without consuming anything.
	var one [1]byte
	for {
		m, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&one[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		var err error
		if errno != 0 {
			err = errno
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, false, nil
		case err != nil:
			return 0, false, fmt.Errorf("peek: %w", err)
		case m == 0:
			return 0, true, nil
		}
		// A byte arrived between the two calls.
		return 1, false, nil
	}
}

// copyHostToStack copies the host connection src into the stack endpoint
// ep (whose events arrive on wq) until src ends or fails, or ctx is done.
// It returns nil at the end of src's stream. It is copyHalf for the
// direction where the netstack sends, without the intermediate buffer.
func copyHostToStack(ctx context.Context, ep tcpip.Endpoint, wq *waiter.Queue, src *net.TCPConn) error {
	rc, err := src.SyscallConn()
	if err != nil {
		return fmt.Errorf("host connection %v: raw conn: %w", src.RemoteAddr(), err)
	}
	entry, writable := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	var (
		p     socketPayload
		werr  tcpip.Error
		eof   bool
		sterr error
	)
	for {
		werr, sterr = nil, nil
		// rc.Read calls the function again each time the socket
		// becomes readable after it returned false.
		rerr := rc.Read(func(fd uintptr) bool {
			var n int
			n, eof, sterr = socketReadable(int(fd))
			if sterr != nil || eof {
				return true
			}
			if n == 0 {
				return false
			}
			p = socketPayload{fd: int(fd), n: n}
			_, werr = ep.Write(&p, tcpip.WriteOptions{})
			return true
		})
		switch {
		case rerr != nil:
			return fmt.Errorf("read host connection: %w", rerr)
		case sterr != nil:
			return fmt.Errorf("read host connection: %w", sterr)
		case p.err != nil:
			return fmt.Errorf("read host connection: %w", p.err)
		case eof:
			return nil
		case werr == nil:
			continue
		}
		if _, ok := werr.(*tcpip.ErrWouldBlock); !ok {
			return fmt.Errorf("write mesh connection: %s", werr)
		}
		// The send buffer is full (nothing was read): wait for room.
		select {
		case <-writable:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
