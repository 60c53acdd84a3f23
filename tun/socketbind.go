package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// socketBatch is how many datagrams one recvmmsg/sendmmsg moves: the
// batch wireguard-go's own bind uses.
const socketBatch = conn.IdealBatchSize

// SocketBind is a conn.Bind over an IPv4 UDP socket that another process
// opened: the rootless agent's starter binds it on the host's network
// before entering rootlesskit's namespace, so WireGuard's datagrams skip
// slirp4netns's userspace NAT and peers see the host's own address and
// port. wireguard-go's StdNetBind cannot take an existing socket, so this
// one moves batches itself with recvmmsg/sendmmsg (x/net/ipv4) and
// segments sends (UDP GSO, socketbind_gso.go); it has no UDP GRO on
// receive and no sticky source address (the kernel picks the source, as
// for any socket bound to 0.0.0.0).
//
// The Bind never closes the given file: each Open works on a duplicate
// (closed by Close), so the device can close and re-open its bind (a
// listen-port update, a restart) without losing the socket, which this
// process could not open again from inside the namespace.
type SocketBind struct {
	file *os.File

	mu   sync.Mutex
	conn *net.UDPConn // nil while closed
	pc   *ipv4.PacketConn

	msgs sync.Pool // *[]ipv4.Message of socketBatch, one buffer each
	flat sync.Pool // *[]byte: one Send's datagrams, coalesced for GSO
	oob  sync.Pool // *[]byte: socketBatch UDP_SEGMENT control messages
	// noGSO is set once the kernel refused a segmented send.
	noGSO atomic.Bool
}

var _ conn.Bind = (*SocketBind)(nil)

// NewSocketBind checks that file is an IPv4 UDP socket and returns a Bind
// over it.
func NewSocketBind(file *os.File) (*SocketBind, error) {
	if err := checkUDP4(file); err != nil {
		return nil, err
	}
	b := &SocketBind{file: file}
	b.msgs.New = func() any {
		m := make([]ipv4.Message, socketBatch)
		for i := range m {
			m[i].Buffers = make([][]byte, 1)
		}
		return &m
	}
	b.flat.New = func() any { p := make([]byte, 0, 64<<10); return &p }
	b.oob.New = func() any { p := make([]byte, socketBatch*gsoCmsgLen); return &p }
	return b, nil
}

// checkUDP4 refuses a file that is not an IPv4 datagram socket: an
// inherited descriptor number is only a number until checked.
func checkUDP4(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("socket %s: %w", f.Name(), err)
	}
	var typ, domain int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		if serr == nil {
			domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		}
	}); err != nil {
		return fmt.Errorf("socket %s: %w", f.Name(), err)
	}
	if serr != nil {
		return fmt.Errorf("socket %s: not a socket: %w", f.Name(), serr)
	}
	if typ != unix.SOCK_DGRAM || domain != unix.AF_INET {
		return fmt.Errorf("socket %s: type %d domain %d, want an IPv4 UDP socket", f.Name(), typ, domain)
	}
	return nil
}

// Open duplicates the socket and returns its one receive function. The
// port is the socket's own: the requested one cannot change what the
// starter bound, so it is ignored.
func (b *SocketBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	// FilePacketConn duplicates the descriptor; the original stays ours.
	pcn, err := net.FilePacketConn(b.file)
	if err != nil {
		return nil, 0, fmt.Errorf("open the handed-in UDP socket %s: %w", b.file.Name(), err)
	}
	uc, ok := pcn.(*net.UDPConn)
	if !ok {
		pcn.Close()
		return nil, 0, fmt.Errorf("open the handed-in socket %s: %T is not UDP", b.file.Name(), pcn)
	}
	growBuffers(uc)
	b.conn, b.pc = uc, ipv4.NewPacketConn(uc)
	port := uint16(uc.LocalAddr().(*net.UDPAddr).Port)
	return []conn.ReceiveFunc{b.receiver(b.pc)}, port, nil
}

func (b *SocketBind) receiver(pc *ipv4.PacketConn) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		mp := b.msgs.Get().(*[]ipv4.Message)
		defer b.msgs.Put(mp)
		msgs := (*mp)[:min(len(packets), socketBatch)]
		for i := range msgs {
			msgs[i].Buffers[0] = packets[i]
			msgs[i].OOB, msgs[i].Addr, msgs[i].N = nil, nil, 0
		}
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			return 0, err
		}
		for i := 0; i < n; i++ {
			sizes[i] = msgs[i].N
			ua, _ := msgs[i].Addr.(*net.UDPAddr)
			if ua == nil {
				sizes[i] = 0 // no sender: wireguard-go skips it
				eps[i] = &conn.StdNetEndpoint{}
				continue
			}
			ap := ua.AddrPort()
			eps[i] = &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
		}
		return n, nil
	}
}

// Send writes bufs to ep in sendmmsg batches.
func (b *SocketBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.mu.Lock()
	pc := b.pc
	b.mu.Unlock()
	if pc == nil {
		return net.ErrClosed
	}
	se, ok := ep.(*conn.StdNetEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	if !se.AddrPort.Addr().Is4() {
		return fmt.Errorf("send to %v: %w", se.AddrPort, errNotIPv4)
	}
	to := net.UDPAddrFromAddrPort(se.AddrPort)
	if len(bufs) > 1 && !b.noGSO.Load() {
		err := b.sendGSO(pc, bufs, to)
		if err == nil || !gsoUnsupported(err) {
			return err
		}
		// Some of the batch may have left: WireGuard tolerates the
		// duplicates (its replay window drops them), not the loss.
		b.noGSO.Store(true)
	}
	mp := b.msgs.Get().(*[]ipv4.Message)
	defer b.msgs.Put(mp)
	for len(bufs) > 0 {
		msgs := (*mp)[:min(len(bufs), socketBatch)]
		for i := range msgs {
			msgs[i].Buffers[0] = bufs[i]
			msgs[i].OOB, msgs[i].Addr, msgs[i].N = nil, to, 0
		}
		if err := writeAll(pc, msgs); err != nil {
			return err
		}
		bufs = bufs[len(msgs):]
	}
	return nil
}

// socketBuffer is StdNetBind's socket buffer size: the default 208 KiB
// receive buffer overflows within one burst of a fast sender.
const socketBuffer = 7 << 20

// growBuffers asks for StdNetBind's buffers. The forcing options need
// CAP_NET_ADMIN over the socket's network namespace, which a rootless
// agent's host-side socket does not give it, so there the host's
// net.core.rmem_max and wmem_max cap the sizes.
func growBuffers(uc *net.UDPConn) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		for _, o := range []struct{ force, plain int }{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.force, socketBuffer) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o.plain, socketBuffer)
			}
		}
	})
}

var errNotIPv4 = errors.New("the handed-in socket is IPv4 only")

// Close closes this Open's duplicate; receivers return net.ErrClosed. The
// handed-in file stays open for the next Open.
func (b *SocketBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn == nil {
		return nil
	}
	err := b.conn.Close()
	b.conn, b.pc = nil, nil
	return err
}

// SetMark is a no-op: the mark would route the socket's packets in the
// host's network namespace, where this process holds no capability.
func (b *SocketBind) SetMark(uint32) error { return nil }

// ParseEndpoint accepts ip:port. An IPv6 endpoint parses, as it does for
// StdNetBind without an IPv6 socket, and its sends fail: a peer's IPv6
// candidate must not make its whole configuration fail.
func (b *SocketBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", s, err)
	}
	return &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

func (b *SocketBind) BatchSize() int { return socketBatch }
