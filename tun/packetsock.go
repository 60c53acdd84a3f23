package tun

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// packetBatchSize is how many packets one recvmmsg or sendmmsg moves:
// wireguard-go hands a device batches of this size at most, and one system
// call per batch instead of one per packet is most of what a packet socket
// costs.
const packetBatchSize = 64

// packetRecvBuffer is the socket's receive buffer: a burst from the host's
// TCP waits there while wireguard-go encrypts the previous batch, instead of
// being dropped and retransmitted.
const packetRecvBuffer = 4 << 20

// packetDevice is wireguard-go's tun.Device over an AF_PACKET socket on
// the agent's end of a veth pair: what the host routes into the other end
// (the uncloud interface) is read here as IP packets, and packets written
// here arrive on that interface as if a TUN device had delivered them.
// The socket is cooked (SOCK_DGRAM): the kernel strips the Ethernet header
// on receive and builds it on send, so buffers hold bare IPv4 packets, as
// with TUN.
type packetDevice struct {
	file    *os.File // the socket, non-blocking, so Close wakes a blocked Read
	raw     syscall.RawConn
	name    string // the interface the mesh is routed to (the host end)
	mtu     int
	dst     unix.RawSockaddrLinklayer // the host end: where writes go
	events  chan wgtun.Event
	onClose func() error

	rmu  sync.Mutex // one reader: the arrays below are reused
	rmsg []mmsghdr
	riov []unix.Iovec
	rsa  []unix.RawSockaddrLinklayer

	wmu  sync.Mutex
	wmsg []mmsghdr
	wiov []unix.Iovec

	closeOnce sync.Once
}

// mmsghdr is struct mmsghdr of recvmmsg(2) and sendmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// newPacketDevice opens the packet socket on ifindex (the agent's end)
// and sends to hostMAC (the other end, named name, which the mesh routes
// to). onClose runs after the socket is closed (it removes the pair).
func newPacketDevice(name string, ifindex int, hostMAC net.HardwareAddr, mtu int, onClose func() error) (*packetDevice, error) {
	if len(hostMAC) != 6 {
		return nil, fmt.Errorf("packet socket: %q has hardware address %v, not an Ethernet one", name, hostMAC)
	}
	// Protocol 0 receives nothing until bind names the protocol and the
	// interface, so no packet of another interface slips in between.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	// What this socket sends itself would otherwise be read back.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return nil, fmt.Errorf("packet socket: ignore outgoing: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, packetRecvBuffer); err != nil {
		// Without CAP_NET_ADMIN only the sysctl's maximum is granted.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, packetRecvBuffer)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifindex}); err != nil {
		return nil, fmt.Errorf("bind packet socket to interface %d: %w", ifindex, err)
	}
	file := os.NewFile(uintptr(fd), "packet:"+name)
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		ok = true // the file owns fd now
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	ok = true
	d := &packetDevice{file: file, raw: raw, name: name, mtu: mtu, events: make(chan wgtun.Event, 1), onClose: onClose,
		rmsg: make([]mmsghdr, packetBatchSize), riov: make([]unix.Iovec, packetBatchSize),
		rsa:  make([]unix.RawSockaddrLinklayer, packetBatchSize),
		wmsg: make([]mmsghdr, packetBatchSize), wiov: make([]unix.Iovec, packetBatchSize)}
	d.dst = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(unix.ETH_P_IP), Ifindex: int32(ifindex), Halen: 6}
	copy(d.dst.Addr[:], hostMAC)
	d.events <- wgtun.EventUp
	return d, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (d *packetDevice) File() *os.File { return nil }

func (d *packetDevice) MTU() (int, error) { return d.mtu, nil }

func (d *packetDevice) Name() (string, error) { return d.name, nil }

func (d *packetDevice) Events() <-chan wgtun.Event { return d.events }

func (d *packetDevice) BatchSize() int { return packetBatchSize }

// Read reads up to len(bufs) packets, each at bufs[i][offset:]. A packet
// that does not fit its buffer (the kernel says MSG_TRUNC) is dropped,
// never handed on cut short.
func (d *packetDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	want := min(len(bufs), len(sizes), packetBatchSize)
	for {
		k := 0
		for i := 0; i < want; i++ {
			if offset >= len(bufs[i]) {
				return 0, fmt.Errorf("packet socket read: offset %d beyond buffer of %d", offset, len(bufs[i]))
			}
			d.riov[k] = unix.Iovec{Base: &bufs[i][offset]}
			d.riov[k].SetLen(len(bufs[i]) - offset)
			d.rmsg[k] = mmsghdr{hdr: unix.Msghdr{Name: (*byte)(unsafe.Pointer(&d.rsa[k])),
				Namelen: uint32(unsafe.Sizeof(d.rsa[k])), Iov: &d.riov[k], Iovlen: 1}}
			k++
		}
		var got int
		var serr error
		err := d.raw.Read(func(fd uintptr) bool {
			r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&d.rmsg[0])), uintptr(k),
				unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN || e == unix.EINTR {
				return false
			}
			got, serr = int(r), nil
			if e != 0 {
				serr = e
			}
			return true
		})
		if err != nil {
			return 0, d.closedErr(err)
		}
		if serr != nil {
			return 0, fmt.Errorf("packet socket read on %s: %w", d.name, serr)
		}
		n := 0
		for i := 0; i < got; i++ {
			m := &d.rmsg[i]
			if m.hdr.Flags&unix.MSG_TRUNC != 0 || d.rsa[i].Pkttype == unix.PACKET_OUTGOING || m.n == 0 {
				continue
			}
			// Compact in place: packets dropped above leave no holes.
			if n != i {
				copy(bufs[n][offset:], bufs[i][offset:offset+int(m.n)])
			}
			sizes[n] = int(m.n)
			n++
		}
		if n > 0 {
			return n, nil
		}
	}
}

// Write sends every packet of bufs (each at bufs[i][offset:]) to the host
// end; it returns how many it sent and the first error.
func (d *packetDevice) Write(bufs [][]byte, offset int) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	sent := 0
	for sent < len(bufs) {
		k := min(len(bufs)-sent, packetBatchSize)
		for i := 0; i < k; i++ {
			b := bufs[sent+i]
			if offset >= len(b) {
				return sent, fmt.Errorf("packet socket write: empty packet at offset %d", offset)
			}
			d.wiov[i] = unix.Iovec{Base: &b[offset]}
			d.wiov[i].SetLen(len(b) - offset)
			d.wmsg[i] = mmsghdr{hdr: unix.Msghdr{Name: (*byte)(unsafe.Pointer(&d.dst)),
				Namelen: uint32(unsafe.Sizeof(d.dst)), Iov: &d.wiov[i], Iovlen: 1}}
		}
		var done int
		var serr error
		err := d.raw.Write(func(fd uintptr) bool {
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&d.wmsg[0])), uintptr(k),
				unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN || e == unix.EINTR {
				return false
			}
			done, serr = int(r), nil
			if e != 0 {
				serr = e
			}
			return true
		})
		if err != nil {
			return sent, d.closedErr(err)
		}
		if serr != nil {
			// One bad packet (too big for the MTU) must not stall the
			// rest: skip it, as a TUN write error drops one packet.
			if errors.Is(serr, unix.EMSGSIZE) || errors.Is(serr, unix.EINVAL) {
				sent++
				continue
			}
			return sent, fmt.Errorf("packet socket write on %s: %w", d.name, serr)
		}
		sent += done
	}
	return sent, nil
}

// closedErr turns the poller's "file already closed" into os.ErrClosed,
// which is what wireguard-go's reader stops on quietly.
func (d *packetDevice) closedErr(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return os.ErrClosed
	}
	return fmt.Errorf("packet socket on %s: %w", d.name, err)
}

// Close closes the socket (a blocked Read returns) and removes the veth
// pair, taking the interface and its routes with it.
func (d *packetDevice) Close() error {
	var err error
	d.closeOnce.Do(func() {
		err = d.file.Close()
		close(d.events)
		if d.onClose != nil {
			if cerr := d.onClose(); err == nil {
				err = cerr
			}
		}
	})
	return err
}
