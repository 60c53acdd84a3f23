package tun

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// netstackNIC is the only NIC of the stack: everything leaves through
// WireGuard.
const netstackNIC tcpip.NICID = 1

// netstackBatchSize is how many packets one Read returns at most. Batching
// is what makes a userspace stack fast (one handoff per batch instead of
// one per 1420-byte packet): batch 1 costs about 3x the CPU per Gbit/s of
// any batch from 16 to 128 (BenchmarkNetstackTuning). With gVisor's own GSO,
// 32 measured better than wireguard-go's conn.IdealBatchSize of 128 (0.36
// against 0.57 CPU-s/Gbit; wireguard-go encrypts a batch as one unit of
// work, so smaller batches spread better over its workers); with our host
// GSO, 16 to 128 are within the noise of this shared machine.
const netstackBatchSize = 32

// netstackConfig configures a userspace packet path.
type netstackConfig struct {
	Address netip.Addr // this machine's mesh address (IPv4 only for now)
	MTU     int
	// Expose lists the host ports that inbound mesh connections may be
	// forwarded to, at 127.0.0.1:PORT. Nothing else is forwarded.
	Expose []ExposedPort
	Logger *slog.Logger

	// tuning overrides defaultNetstackTuning; only benchmarks set it.
	tuning *netstackTuning
}

// netstack is a gVisor TCP/IP stack that wireguard-go uses as its TUN
// device: Read hands wireguard-go the packets the stack sends, Write injects
// the packets WireGuard decrypted. The agent's own sockets live inside the
// stack (DialContext, Listen, ListenPacket); inbound connections to exposed
// ports are forwarded to the host.
type netstack struct {
	addr   tcpip.Address
	mtu    int
	batch  int
	logger *slog.Logger

	stack *stack.Stack
	link  *linkEndpoint
	fwd   *forwarder

	events    chan wgtun.Event
	closeOnce sync.Once
}

var _ wgtun.Device = (*netstack)(nil)

// newNetstack builds and tunes the stack. It is ready for traffic when it
// returns; wireguard-go learns that from EventUp.
func newNetstack(cfg netstackConfig) (*netstack, error) {
	if !cfg.Address.Is4() {
		return nil, fmt.Errorf("netstack: address %v is not an IPv4 address", cfg.Address)
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("netstack: mtu %d is out of range 576..65535", cfg.MTU)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	logger := cfg.Logger.With("component", "netstack")
	tuning := defaultNetstackTuning()
	if cfg.tuning != nil {
		tuning = *cfg.tuning
	}

	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	n := &netstack{
		addr:   tcpip.AddrFrom4(cfg.Address.As4()),
		mtu:    cfg.MTU,
		logger: logger,
		stack:  s,
		batch:  tuning.batch,
		link:   newLinkEndpoint(uint32(cfg.MTU), tuning),
		events: make(chan wgtun.Event, 1),
	}
	if err := tuning.apply(s); err != nil {
		s.Destroy()
		return nil, err
	}
	if err := s.CreateNIC(netstackNIC, n.link); err != nil {
		s.Destroy()
		return nil, fmt.Errorf("netstack: create nic: %v", err)
	}
	protoAddr := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: n.addr.WithPrefix(),
	}
	if err := s.AddProtocolAddress(netstackNIC, protoAddr, stack.AddressProperties{}); err != nil {
		s.Destroy()
		return nil, fmt.Errorf("netstack: add address %v: %v", cfg.Address, err)
	}
	// Every destination goes to WireGuard; its allowed IPs decide which
	// peer, if any, gets the packet.
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: netstackNIC}})

	fwd, err := newForwarder(s, n.addr, cfg.Expose, logger)
	if err != nil {
		s.Destroy()
		return nil, err
	}
	n.fwd = fwd
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.tcp.HandlePacket)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, fwd.udp.HandlePacket)

	n.events <- wgtun.EventUp
	logger.Info("netstack up", "address", cfg.Address, "mtu", cfg.MTU, "expose", cfg.Expose)
	return n, nil
}

// setExposed replaces the exposed ports at runtime (see
// forwarder.setExposed).
func (n *netstack) setExposed(expose []ExposedPort) error {
	closed, err := n.fwd.setExposed(expose)
	if err != nil {
		return err
	}
	n.logger.Info("exposed ports changed", "expose", expose, "closed_flows", closed)
	return nil
}

// File is nil: there is no kernel file descriptor behind a netstack.
func (n *netstack) File() *os.File { return nil }

func (n *netstack) MTU() (int, error) { return n.mtu, nil }

func (n *netstack) Name() (string, error) { return "netstack", nil }

func (n *netstack) Events() <-chan wgtun.Event { return n.events }

// BatchSize lets wireguard-go hand over and take whole batches, which is
// what makes a userspace stack fast: one call per batch instead of one per
// 1420-byte packet.
func (n *netstack) BatchSize() int { return n.batch }

// Read blocks until the stack has sent at least one packet, then returns as
// many queued packets as fit in bufs (wireguard-go passes the larger of our
// BatchSize and its Bind's, so this is what actually batches).
//
// It first yields, so that the batch wireguard-go handed to its encryption
// goroutine on the previous call is encrypted and sent before the next one
// is taken. Otherwise, with one CPU (GOMAXPROCS 1), this reader and the
// stack's sender hand the P to each other through the scheduler's runnext
// slot while encryption waits in the run queue: a burst of ACKs makes the
// stack hand over its whole window, the reader takes all of it, and only
// then does anything leave. Execution traces of both agents during netstack
// sends (iperf3 -R) showed the result: the first UDP send came 0.6-0.75 ms
// after the ACKs, each agent idled about 45 % of the time waiting for the
// other, and both were idle together only 7 %: the window travelled as one
// clump and the two machines took turns instead of overlapping. A TUN
// device has no such problem: the kernel's TCP runs on the sending process
// and TCP Small Queues keep the TUN queue short.
func (n *netstack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	runtime.Gosched()
	if len(bufs) > n.batch {
		bufs = bufs[:n.batch]
	}
	return n.link.read(bufs, sizes, offset)
}

// Write injects decrypted packets into the stack.
func (n *netstack) Write(bufs [][]byte, offset int) (int, error) {
	return n.link.write(bufs, offset)
}

// Close stops the forwarders, tears down every endpoint and unblocks Read.
// It is safe to call more than once.
func (n *netstack) Close() error {
	n.closeOnce.Do(func() {
		n.fwd.close()
		n.link.close()
		// Destroy aborts every endpoint, so conns that callers still
		// hold fail instead of hanging, and waits for their workers.
		n.stack.Destroy()
		n.fwd.wait()
		close(n.events)
	})
	return nil
}

// errNetstackClosed is returned by Read and Write after Close. wireguard-go
// stops its TUN reader on any error from Read.
var errNetstackClosed = errors.New("netstack closed")
