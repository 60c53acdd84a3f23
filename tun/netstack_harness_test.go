package tun

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	wgtun "golang.zx2c4.com/wireguard/tun"
	upstream "golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// The harness: two wireguard-go devices over real UDP on 127.0.0.1, each
// over a userspace stack (ours, or wireguard-go's upstream tun/netstack for
// comparison). It uses conn.NewStdNetBind directly, so it tests the packet
// path alone.

var (
	nsAddrA = netip.MustParseAddr("10.210.1.1")
	nsAddrB = netip.MustParseAddr("10.210.2.1")
)

// nsNode is one end of the harness mesh.
type nsNode struct {
	addr netip.Addr
	ns   *netstack // nil for the upstream implementation
	up   *upstream.Net
	tdev wgtun.Device
	dev  *device.Device
	key  Key
	port uint16
}

func (n *nsNode) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if n.ns != nil {
		return n.ns.DialContext(ctx, network, addr)
	}
	return n.up.DialContext(ctx, network, addr)
}

func (n *nsNode) listen(port uint16) (net.Listener, error) {
	if n.ns != nil {
		return n.ns.Listen("tcp", ":"+strconv.Itoa(int(port)))
	}
	return n.up.ListenTCPAddrPort(netip.AddrPortFrom(n.addr, port))
}

// nsImpl names a userspace stack implementation in table-driven tests and
// benchmarks.
type nsImpl string

const (
	implOurs     nsImpl = "ours"
	implUpstream nsImpl = "upstream"
)

type nsNodeOpts struct {
	impl   nsImpl
	expose []ExposedPort
	tuning *netstackTuning // nil: defaults
}

// newNSNode starts a device listening on a random loopback UDP port.
func newNSNode(tb testing.TB, addr netip.Addr, opts nsNodeOpts) *nsNode {
	tb.Helper()
	const mtu = meshaddr.MaxTunnelMTU
	n := &nsNode{addr: addr}
	switch opts.impl {
	case implOurs, "":
		ns, err := newNetstack(netstackConfig{Address: addr, MTU: mtu, Expose: opts.expose, Logger: slog.New(slog.DiscardHandler), tuning: opts.tuning})
		if err != nil {
			tb.Fatalf("newNetstack: %v", err)
		}
		n.ns, n.tdev = ns, ns
	case implUpstream:
		tdev, tnet, err := upstream.CreateNetTUN([]netip.Addr{addr}, nil, mtu)
		if err != nil {
			tb.Fatalf("upstream CreateNetTUN: %v", err)
		}
		n.up, n.tdev = tnet, tdev
	default:
		tb.Fatalf("unknown implementation %q", opts.impl)
	}
	key, err := GeneratePrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	n.key = key
	n.dev = device.NewDevice(n.tdev, conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	tb.Cleanup(n.dev.Close)
	if err := n.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", key.hexString())); err != nil {
		tb.Fatalf("configure device %v: %v", addr, err)
	}
	if err := n.dev.Up(); err != nil {
		tb.Fatalf("up device %v: %v", addr, err)
	}
	n.port = nsListenPort(tb, n.dev)
	return n
}

// nsListenPort reads the UDP port the device bound.
func nsListenPort(tb testing.TB, dev *device.Device) uint16 {
	tb.Helper()
	cfg, err := dev.IpcGet()
	if err != nil {
		tb.Fatalf("IpcGet: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(cfg))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "listen_port="); ok {
			p, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				tb.Fatalf("listen_port %q: %v", v, err)
			}
			return uint16(p)
		}
	}
	tb.Fatalf("no listen_port in device config")
	return 0
}

// nsConnect makes a and b peers of each other, each with its /24.
func nsConnect(tb testing.TB, a, b *nsNode) {
	tb.Helper()
	peer := func(from, to *nsNode) {
		subnet := netip.PrefixFrom(to.addr, 24).Masked()
		cfg := fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:%d\nallowed_ip=%s\n",
			to.key.PublicKey().hexString(), to.port, subnet)
		if err := from.dev.IpcSet(cfg); err != nil {
			tb.Fatalf("add peer %v to %v: %v", to.addr, from.addr, err)
		}
	}
	peer(a, b)
	peer(b, a)
}

// newNSPair returns a (10.210.1.1) and b (10.210.2.1), connected.
func newNSPair(tb testing.TB, implA, implB nsImpl, exposeB []ExposedPort) (a, b *nsNode) {
	tb.Helper()
	return newNSPairOpts(tb, nsNodeOpts{impl: implA}, nsNodeOpts{impl: implB, expose: exposeB})
}

func newNSPairOpts(tb testing.TB, optsA, optsB nsNodeOpts) (a, b *nsNode) {
	tb.Helper()
	a = newNSNode(tb, nsAddrA, optsA)
	b = newNSNode(tb, nsAddrB, optsB)
	nsConnect(tb, a, b)
	return a, b
}

// nsEchoServe echoes every connection accepted on l until l is closed.
func nsEchoServe(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}
