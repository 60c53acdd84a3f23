package tun

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// hostToMeshMax bounds the bytes one endpoint Write takes from the host
// socket, like spliceBufSize bounds one gonet Write.
const hostToMeshMax = 256 << 10

// socketPayloader lets a gVisor endpoint read a host socket straight into
// its own send buffer: gVisor's Write asks Len, then Reads into the views it
// queues, so the payload is copied once (kernel to gVisor) instead of twice
// (kernel to our buffer, our buffer to gVisor).
type socketPayloader struct {
	fd  int
	n   int // bytes the socket holds that we have not read yet
	err error
}

func (p *socketPayloader) Len() int { return p.n }

func (p *socketPayloader) Read(b []byte) (int, error) {
	if p.n == 0 {
		return 0, io.EOF
	}
	if len(b) == 0 {
		return 0, nil
	}
	if len(b) > p.n {
		b = b[:p.n]
	}
	n, err := unix.Read(p.fd, b)
	if err != nil || n <= 0 {
		// FIONREAD promised the bytes, so this is a socket error (a
		// reset); gVisor drops the partial payload, and the error is
		// kept for the caller.
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		p.err = err
		p.n = 0
		return 0, err
	}
	p.n -= n
	return n, nil
}

// copyHostToMesh copies the host socket into the mesh endpoint until the
// host sends EOF (then it half-closes the mesh side) or either side fails
// (then it closes both, as copyHalf does). It is copyHalf for the
// host-to-mesh direction, without the intermediate buffer.
func copyHostToMesh(mesh net.Conn, ep tcpip.Endpoint, wq *waiter.Queue, host *net.TCPConn) {
	if err := hostToMesh(ep, wq, host); err != nil {
		host.Close()
		mesh.Close()
		return
	}
	ep.Shutdown(tcpip.ShutdownWrite)
}

// errHostEOF marks the host's FIN, which is not a failure.
var errHostEOF = errors.New("host eof")

func hostToMesh(ep tcpip.Endpoint, wq *waiter.Queue, host *net.TCPConn) error {
	rc, err := host.SyscallConn()
	if err != nil {
		return fmt.Errorf("host socket: %w", err)
	}
	// Registered before the first Write, so a wakeup between a full send
	// buffer and the wait is not lost.
	entry, writable := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	p := &socketPayloader{}
	for {
		var werr tcpip.Error
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			avail, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
			if err != nil {
				rerr = fmt.Errorf("host socket: FIONREAD: %w", err)
				return true
			}
			if avail == 0 {
				// Readable with nothing queued is EOF or an error; no
				// data yet is EAGAIN: wait for the poller.
				var one [1]byte
				n, _, err := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
				switch {
				case errors.Is(err, syscall.EAGAIN):
					return false
				case err != nil:
					rerr = fmt.Errorf("host socket: %w", err)
				case n == 0:
					rerr = errHostEOF
				}
				// n > 0: data arrived since FIONREAD; read it next round.
				return true
			}
			*p = socketPayloader{fd: int(fd), n: min(avail, hostToMeshMax)}
			_, werr = ep.Write(p, tcpip.WriteOptions{})
			return true
		})
		switch {
		case err != nil:
			return fmt.Errorf("host socket: %w", err)
		case errors.Is(rerr, errHostEOF):
			return nil
		case rerr != nil:
			return rerr
		case p.err != nil:
			return fmt.Errorf("host socket: read: %w", p.err)
		}
		switch werr.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			<-writable
		default:
			return fmt.Errorf("mesh endpoint: write: %s", werr)
		}
	}
}
