package tun

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/uncloud-mesh/uncloud/meshaddr"
)

type meshPair struct {
	kernel, userspace *Device
	kernelPeer        Peer // how the kernel device knows the userspace one
}

// openMixedPair starts a kernel-mode and a netstack-mode device in this
// network namespace, peered over real UDP on loopback.
func openMixedPair(t *testing.T) meshPair {
	t.Helper()
	ctx := context.Background()
	ka, _ := GeneratePrivateKey()
	kb, _ := GeneratePrivateKey()
	a, err := Open(ctx, Config{PrivateKey: ka, Address: netip.MustParseAddr("10.210.1.1"), ListenPort: 51901})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := Open(ctx, Config{PrivateKey: kb, Address: netip.MustParseAddr("10.210.2.1"), ListenPort: 51902, Userspace: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if a.Mode() != ModeKernel || b.Mode() != ModeNetstack {
		t.Fatalf("modes = %s, %s; want kernel, netstack", a.Mode(), b.Mode())
	}
	toB := Peer{PublicKey: kb.PublicKey(), Endpoint: netip.MustParseAddrPort("127.0.0.1:51902"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.2.0/24")}, PersistentKeepalive: DefaultKeepalive}
	toA := Peer{PublicKey: ka.PublicKey(), Endpoint: netip.MustParseAddrPort("127.0.0.1:51901"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.1.0/24")}, PersistentKeepalive: DefaultKeepalive}
	if err := a.SetPeer(toB); err != nil {
		t.Fatal(err)
	}
	if err := b.SetPeer(toA); err != nil {
		t.Fatal(err)
	}
	return meshPair{kernel: a, userspace: b, kernelPeer: toB}
}

// echoOnce dials from the netstack device to an echo server on the kernel
// device's mesh address and checks the bytes come back.
func echoOnce(ctx context.Context, from *Device, addr string) error {
	c, err := from.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	msg := []byte("across the mesh")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		return errors.New("echo mismatch: " + string(got))
	}
	return nil
}

func serveEcho(t *testing.T, d *Device) string {
	t.Helper()
	ln, err := d.Listen(context.Background(), "tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func TestDeviceMixedModesAndPeerAPI(t *testing.T) {
	if !runIsolated(t, false) {
		return
	}
	p := openMixedPair(t)
	addr := serveEcho(t, p.kernel)
	if !strings.HasPrefix(addr, "10.210.1.1:") {
		t.Fatalf("kernel listener bound to %s, want the mesh address", addr)
	}

	// Both sides were configured at once with a keepalive, so both sent a
	// handshake initiation at the same moment. In about one run of six the
	// crossed handshakes leave the first session unusable until WireGuard
	// starts a new one after its 5 s rekey timeout (measured first echo:
	// 10–35 ms usually, 5.1–5.3 s, once 23 s with TCP's SYN backoff on
	// top). The first echo may take that long; the ones after may not.
	first, cancelFirst := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancelFirst()
	start := time.Now()
	if err := echoOnce(first, p.userspace, addr); err != nil {
		t.Fatalf("netstack -> kernel echo: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Logf("first echo took %v (crossed handshakes, see above)", took.Round(time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	peers, err := p.kernel.Peers()
	if err != nil || len(peers) != 1 {
		t.Fatalf("Peers() = %v, %v", peers, err)
	}
	st := peers[0]
	if st.LastHandshake.IsZero() || st.RxBytes == 0 || st.TxBytes == 0 {
		t.Fatalf("after traffic, peer status = %+v; want a handshake and bytes both ways", st)
	}
	if st.Endpoint != netip.MustParseAddrPort("127.0.0.1:51902") || st.PersistentKeepalive != DefaultKeepalive {
		t.Fatalf("peer endpoint/keepalive = %v/%v", st.Endpoint, st.PersistentKeepalive)
	}
	handshake := st.LastHandshake

	// RecentPeers shares one read between pollers: more traffic does not
	// show within maxAge, a fresh Peers does, and a peer change drops it.
	if err := echoOnce(ctx, p.userspace, addr); err != nil {
		t.Fatalf("second echo: %v", err)
	}
	if recent, err := p.kernel.RecentPeers(time.Minute); err != nil || recent[0].RxBytes != st.RxBytes {
		t.Fatalf("RecentPeers within maxAge = %+v, %v; want the shared answer (rx %d)", recent, err, st.RxBytes)
	}
	if fresh, _ := p.kernel.Peers(); fresh[0].RxBytes <= st.RxBytes {
		t.Fatalf("Peers after more traffic: rx %d, was %d", fresh[0].RxBytes, st.RxBytes)
	}

	// Adding and updating another peer leaves the existing session alone.
	other, _ := GeneratePrivateKey()
	third := Peer{PublicKey: other.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.3.0/24")}}
	if err := p.kernel.SetPeer(third); err != nil {
		t.Fatal(err)
	}
	third.Endpoint = netip.MustParseAddrPort("127.0.0.1:51999")
	if err := p.kernel.SetPeer(third); err != nil {
		t.Fatal(err)
	}
	if recent, _ := p.kernel.RecentPeers(time.Minute); len(recent) != 2 {
		t.Fatalf("RecentPeers after SetPeer lists %d peers, want 2: a change must drop the shared answer", len(recent))
	}
	if err := echoOnce(ctx, p.userspace, addr); err != nil {
		t.Fatalf("echo after adding a third peer: %v", err)
	}
	peers, _ = p.kernel.Peers()
	for _, ps := range peers {
		if ps.PublicKey == p.kernelPeer.PublicKey && !ps.LastHandshake.Equal(handshake) {
			t.Fatalf("existing peer re-handshook (%v -> %v): it was disturbed", handshake, ps.LastHandshake)
		}
	}

	// Overlapping allowed IPs and our own address are refused.
	overlap := Peer{PublicKey: third.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.2.128/25")}}
	if err := p.kernel.SetPeer(overlap); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("overlapping SetPeer error = %v", err)
	}
	self := Peer{PublicKey: third.PublicKey, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.1.0/24")}}
	if err := p.kernel.SetPeer(self); err == nil || !strings.Contains(err.Error(), "this machine's address") {
		t.Fatalf("SetPeer claiming our address: error = %v", err)
	}

	// Removing the peer stops its traffic; the third peer is still there.
	if err := p.kernel.RemovePeer(p.kernelPeer.PublicKey); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	err = echoOnce(short, p.userspace, addr)
	cancelShort()
	if err == nil {
		t.Fatal("echo still works after the peer was removed")
	}
	peers, _ = p.kernel.Peers()
	if len(peers) != 1 || peers[0].PublicKey != third.PublicKey {
		t.Fatalf("after removal peers = %+v, want only the third", peers)
	}

	// SyncPeers restores it and drops the third.
	if err := p.kernel.SyncPeers([]Peer{p.kernelPeer}); err != nil {
		t.Fatal(err)
	}
	if err := echoOnce(ctx, p.userspace, addr); err != nil {
		t.Fatalf("echo after SyncPeers restored the peer: %v", err)
	}
	if peers, _ = p.kernel.Peers(); len(peers) != 1 || peers[0].PublicKey != p.kernelPeer.PublicKey {
		t.Fatalf("after SyncPeers peers = %+v", peers)
	}
}

func TestKernelDeviceFailsClosed(t *testing.T) {
	if !runIsolated(t, false) {
		return
	}
	p := openMixedPair(t)
	link, err := netlink.LinkByName(DefaultInterfaceName)
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().MTU != p.kernel.MTU() || p.kernel.MTU() > meshaddr.MaxTunnelMTU {
		t.Fatalf("link MTU %d, device MTU %d", link.Attrs().MTU, p.kernel.MTU())
	}
	// A default route makes the test meaningful: without the fail-closed
	// route, mesh traffic would leave through it.
	lo, _ := netlink.LinkByName("lo")
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatalf("add default route: %v", err)
	}
	p.kernel.Close()
	if _, err := netlink.LinkByName(DefaultInterfaceName); err == nil {
		t.Fatal("interface still exists after Close")
	}
	_, err = netlink.RouteGet(net.ParseIP("10.210.2.1"))
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("route lookup for a mesh address after close: %v, want EHOSTUNREACH", err)
	}
	c, err := net.DialTimeout("udp", "10.210.2.1:9", time.Second)
	if err == nil {
		_, err = c.Write([]byte("must not leave"))
		c.Close()
	}
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("sending to a mesh address after close: %v, want EHOSTUNREACH", err)
	}
}

// Without CAP_NET_ADMIN the device must fall back to the netstack by
// itself and still carry traffic.
func TestUnprivilegedFallsBackToNetstack(t *testing.T) {
	if !runIsolated(t, true) {
		return
	}
	if syscall.Geteuid() == 0 {
		t.Fatal("child still runs as root")
	}
	k, _ := GeneratePrivateKey()
	d, err := Open(context.Background(), Config{PrivateKey: k, Address: netip.MustParseAddr("10.210.5.1"), ListenPort: 51905})
	if err != nil {
		t.Fatalf("Open without privileges: %v", err)
	}
	defer d.Close()
	if d.Mode() != ModeNetstack {
		t.Fatalf("mode = %s, want netstack", d.Mode())
	}
}
