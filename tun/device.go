package tun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/device"
	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// Mode is how packets reach the host: a kernel TUN interface, or a
// userspace TCP/IP stack inside the agent.
type Mode string

const (
	ModeKernel   Mode = "kernel"
	ModeNetstack Mode = "netstack"
)

// Device is one machine's end of the mesh.
type Device struct {
	cfg  Config
	pub  Key // cfg.PrivateKey's public half, computed once (an X25519 multiplication)
	mode Mode
	why  string // netstack mode: which capability or device is missing (chooseLink)
	mtu  int
	log  *slog.Logger

	wg     *device.Device
	bind   *Bind
	kernel *kernelLink // kernel mode only
	stack  *netstack   // netstack mode only

	mu    sync.Mutex // serialises peer changes and guards peers
	peers map[Key]Peer

	statusMu sync.Mutex   // guards the shared Peers answer and dump
	dump     bytes.Buffer // wireguard-go's state, as last read
	status   []PeerStatus
	statusAt time.Time

	closeOnce sync.Once
}

// Open brings the device up: kernel TUN if this process can create and
// configure one (and cfg.Userspace is false), a veth stand-in for it where
// /dev/net/tun is missing but the process holds CAP_NET_ADMIN and
// CAP_NET_RAW, otherwise the netstack, with one log line saying why
// (chooseLink).
func Open(ctx context.Context, cfg Config) (*Device, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var socket *SocketBind
	if cfg.Socket != nil {
		var err error
		if socket, err = NewSocketBind(cfg.Socket); err != nil {
			return nil, fmt.Errorf("use the handed-in WireGuard socket: %w", err)
		}
	}
	d := &Device{cfg: cfg, pub: cfg.PrivateKey.PublicKey(), log: cfg.Logger, peers: make(map[Key]Peer)}

	d.mtu = cfg.MTU
	if d.mtu == 0 {
		underlay := underlayMTU(cfg.InterfaceName)
		mtu, err := meshaddr.TunnelMTU(underlay)
		if err != nil {
			d.log.Warn("underlay MTU out of spec", "underlay_mtu", underlay, "err", err)
		}
		d.mtu = mtu
	}

	var tunDev wgtun.Device
	k, why, err := chooseLink(cfg, d.mtu, d.log)
	if err != nil {
		return nil, err
	}
	if k != nil {
		d.kernel, d.mode, tunDev = k, ModeKernel, k.dev
	}
	d.why = why
	if tunDev == nil {
		// Host programs cannot use the mesh in netstack mode, but without
		// this route their packets to mesh addresses would leave through
		// the default route in clear text. Best effort: an unprivileged
		// agent cannot install it.
		if err := ensureFailClosedRoute(cfg.MeshPrefix); err != nil {
			d.log.Debug("no fail-closed route in netstack mode", "reason", err)
		}
		ns, err := newNetstack(netstackConfig{Address: cfg.Address, MTU: d.mtu, Expose: cfg.Expose, Logger: d.log})
		if err != nil {
			return nil, fmt.Errorf("start netstack at %v: %w", cfg.Address, err)
		}
		d.stack, d.mode, tunDev = ns, ModeNetstack, ns
	}

	d.bind = NewBind(DefaultControlQueueLen)
	if socket != nil {
		d.bind = newBindOver(socket, DefaultControlQueueLen)
	}
	outLimit := queueLimit
	if d.stack != nil {
		outLimit = netstackOutQueueLimit
	}
	d.bind.out, d.bind.in = newInflight(outLimit, queueStall), newInflight(queueLimit, queueStall)
	bounded := &boundedTUN{
		Device: newJoinFilter(tunDev, meshaddr.Join(), cfg.Address, cfg.JoinPort),
		out:    d.bind.out,
		in:     d.bind.in,
	}
	d.wg = device.NewDevice(bounded, d.bind, wireguardLogger(d.log))
	setup := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", cfg.PrivateKey.hexString(), cfg.ListenPort)
	if err := d.wg.IpcSet(setup); err != nil {
		d.wg.Close()
		return nil, fmt.Errorf("configure wireguard (listen port %d): %w", cfg.ListenPort, err)
	}
	if err := d.wg.Up(); err != nil {
		d.wg.Close()
		return nil, fmt.Errorf("bring wireguard up on port %d: %w", cfg.ListenPort, err)
	}
	return d, nil
}

// ErrKernelMode is the answer of what only a netstack device does.
var ErrKernelMode = errors.New("this machine's mesh runs in kernel mode")

// SetExposed replaces the host ports a netstack device forwards inbound
// mesh connections to; connections and flows to a port no longer listed
// are closed at once. A kernel device has nothing to forward (the mesh
// reaches the host's ports through the interface, as its firewall
// allows): the error wraps ErrKernelMode.
func (d *Device) SetExposed(expose []ExposedPort) error {
	if d.stack == nil {
		return fmt.Errorf("expose %v: %w: the mesh reaches this host's ports through the %s interface, as its firewall allows", expose, ErrKernelMode, d.InterfaceName())
	}
	return d.stack.setExposed(expose)
}

// Mode reports which packet path the device uses.
func (d *Device) Mode() Mode { return d.mode }

// Link is the packet path under Mode: a TUN or its veth stand-in in
// kernel mode, the netstack otherwise.
func (d *Device) Link() Link {
	switch {
	case d.kernel == nil:
		return LinkNetstack
	case d.kernel.veth:
		return LinkVeth
	}
	return LinkTUN
}

// ModeName is Mode as machines report it: "kernel", "kernel/veth" or
// "netstack". It stays "kernel" for a TUN so that older readers match.
func (d *Device) ModeName() string {
	if d.Link() == LinkVeth {
		return string(ModeKernel) + "/" + string(LinkVeth)
	}
	return string(d.mode)
}

// NetstackReason is why a netstack device is not in kernel mode (the
// missing capability, or --userspace); empty in kernel mode.
func (d *Device) NetstackReason() string { return d.why }

// MTU is the tunnel MTU in use.
func (d *Device) MTU() int { return d.mtu }

// Address is this machine's mesh address.
func (d *Device) Address() netip.Addr { return d.cfg.Address }

// InterfaceName is the kernel interface name, empty in netstack mode.
func (d *Device) InterfaceName() string {
	if d.kernel == nil {
		return ""
	}
	return d.kernel.name
}

// PublicKey is this machine's WireGuard public key.
func (d *Device) PublicKey() Key { return d.pub }

// ListenPort is the UDP port WireGuard (and STUN) listen on.
func (d *Device) ListenPort() uint16 { return d.cfg.ListenPort }

// Bind exposes the socket tap for the NAT layer (STUN, probes, relay).
func (d *Device) Bind() *Bind { return d.bind }

// DialContext opens a connection into the mesh from this machine: through
// the host stack in kernel mode, through the netstack otherwise.
func (d *Device) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if d.stack != nil {
		return d.stack.DialContext(ctx, network, address)
	}
	var dialer net.Dialer
	return dialer.DialContext(ctx, network, address)
}

// Listen listens for TCP connections from the mesh on this machine's mesh
// address; address is ":port" or "<mesh address>:port".
func (d *Device) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	if d.stack != nil {
		return d.stack.Listen(network, address)
	}
	var lc net.ListenConfig
	return lc.Listen(ctx, network, d.hostAddress(address))
}

// ListenPacket is Listen for UDP.
func (d *Device) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	if d.stack != nil {
		return d.stack.ListenPacket(network, address)
	}
	var lc net.ListenConfig
	return lc.ListenPacket(ctx, network, d.hostAddress(address))
}

// hostAddress binds ":port" to the mesh address in kernel mode, so a
// service meant for the mesh never listens on public interfaces.
func (d *Device) hostAddress(address string) string {
	host, port, err := net.SplitHostPort(address)
	if err == nil && host == "" {
		return net.JoinHostPort(d.cfg.Address.String(), port)
	}
	return address
}

// Close tears the device down. In kernel mode the interface disappears
// with it, and the fail-closed route stays behind on purpose.
func (d *Device) Close() error {
	// wireguard-go's Close closes the TUN (or netstack) and the Bind and
	// reports nothing; the error result fits io.Closer.
	d.closeOnce.Do(d.wg.Close)
	return nil
}

// SettleConns waits, up to ctx, until no TCP connection of a netstack
// device is open or half closed, so that Close does not cut a close short.
// A peer whose FIN is never acknowledged retransmits it for minutes, and
// WireGuard restarts its handshake with this device's key (gone by then)
// for each retransmission: the issuer of a join token did that for every
// joiner whose temporary device closed a moment too early, dozens of
// handshake initiations a minute. Kernel mode has nothing to settle.
func (d *Device) SettleConns(ctx context.Context) error {
	if d.stack == nil {
		return nil
	}
	return settleConns(ctx, d.stack.closing)
}

// Quiesce ends this device's exchange with peer cleanly, before Close: it
// settles the TCP connections (SettleConns), then sends peer a WireGuard
// keepalive and waits until it has left. WireGuard restarts a handshake
// 15 s after it last sent data unless something arrives meanwhile, and
// then retries every 5 s for 90 s; the keepalive, later than anything
// either side sent over the connection, is that something. Without it
// the issuer of a join token went through the retries with the token's
// key for most joins (its last packet was an ACK the joiner never
// answered, as TCP's last packet is). Kernel mode settles no connections
// but sends the keepalive all the same.
func (d *Device) Quiesce(ctx context.Context, peer Key) error {
	if err := d.SettleConns(ctx); err != nil {
		return err
	}
	sent := func() (uint64, error) {
		peers, err := d.Peers()
		if err != nil {
			return 0, err
		}
		for _, p := range peers {
			if p.PublicKey == peer {
				return p.TxBytes, nil
			}
		}
		return 0, fmt.Errorf("quiesce: no peer %s", peer)
	}
	before, err := sent()
	if err != nil {
		return err
	}
	// wireguard-go sends a keepalive at once when persistent keepalives
	// are turned on; off first, so that they are turned on whatever the
	// peer had.
	d.mu.Lock()
	err = d.ipcSet(fmt.Sprintf("public_key=%s\nupdate_only=true\npersistent_keepalive_interval=0\npersistent_keepalive_interval=%d\n",
		peer.hexString(), int(DefaultKeepalive/time.Second)))
	if p, ok := d.peers[peer]; ok && err == nil {
		p.PersistentKeepalive = DefaultKeepalive
		d.peers[peer] = p
	}
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("quiesce: keepalive to %s: %w", peer, err)
	}
	return settleConns(ctx, func() int {
		if tx, err := sent(); err != nil || tx > before {
			return 0
		}
		return 1
	})
}

// settleConns polls closing (the stack keeps no event for a settled
// connection) until it is zero or ctx ends.
func settleConns(ctx context.Context, closing func() int) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for n := closing(); n > 0; n = closing() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d connections still closing: %w", n, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// Wait is closed when the device has shut down, for whatever reason.
func (d *Device) Wait() <-chan struct{} { return d.wg.Wait() }

func wireguardLogger(l *slog.Logger) *device.Logger {
	wg := l.With("component", "wireguard")
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if wg.Enabled(context.Background(), slog.LevelDebug) {
				wg.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) { wg.Error(fmt.Sprintf(format, args...)) },
	}
}
