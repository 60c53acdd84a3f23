package tun

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/vishvananda/netlink"
)

// On a host without /dev/net/tun, a root agent gets kernel mode through a
// veth pair and a packet socket: host programs reach the mesh and are
// reached from it through the uncloud interface, full-size packets carry
// correct checksums both ways, and closing the device takes the pair away
// and leaves the fail-closed route.
func TestVethStandsInForTUN(t *testing.T) {
	// qemu-user answers the ethtool ioctl (SIOCETHTOOL) with ENOSYS, and
	// the veth stand-in needs it to turn checksum offload off; on a real
	// arm64 or armv7 kernel it is there.
	testkit.SkipIfEmulated(t, "qemu-user does not translate SIOCETHTOOL, which the veth stand-in needs")
	if !runIsolatedIn(t, false, true) {
		return
	}
	if _, err := os.Stat("/dev/net/tun"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("/dev/net/tun is visible in the child: %v", err)
	}
	// A pair left by a killed agent must not stop the next one.
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: DefaultInterfaceName}, PeerName: "stale-pk"}); err != nil {
		t.Fatalf("make a stale veth: %v", err)
	}
	ctx := context.Background()
	ka, _ := GeneratePrivateKey()
	kb, _ := GeneratePrivateKey()
	a, err := Open(ctx, Config{PrivateKey: ka, Address: netip.MustParseAddr("10.210.1.1"), ListenPort: 51911})
	if err != nil {
		t.Fatalf("Open without /dev/net/tun: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	if a.Mode() != ModeKernel || a.Link() != LinkVeth || a.ModeName() != "kernel/veth" || a.NetstackReason() != "" {
		t.Fatalf("mode %s link %s name %s reason %q; want kernel over veth", a.Mode(), a.Link(), a.ModeName(), a.NetstackReason())
	}
	if _, err := netlink.LinkByName("stale-pk"); err == nil {
		t.Fatal("the stale pair is still there")
	}
	link, err := netlink.LinkByName(DefaultInterfaceName)
	if err != nil || link.Type() != "veth" || link.Attrs().MTU != a.MTU() || link.Attrs().RawFlags&syscall.IFF_NOARP == 0 {
		t.Fatalf("host end = %+v, %v; want a NOARP veth with MTU %d", link, err, a.MTU())
	}
	if l, err := FindLeftovers("", netip.Prefix{}); err != nil || l.Interface != DefaultInterfaceName {
		t.Fatalf("FindLeftovers = %+v, %v; want the veth named", l, err)
	}

	b, err := Open(ctx, Config{PrivateKey: kb, Address: netip.MustParseAddr("10.210.2.1"), ListenPort: 51912, Userspace: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	a.SetPeer(Peer{PublicKey: kb.PublicKey(), Endpoint: netip.MustParseAddrPort("127.0.0.1:51912"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.2.0/24")}})
	b.SetPeer(Peer{PublicKey: ka.PublicKey(), Endpoint: netip.MustParseAddrPort("127.0.0.1:51911"),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.210.1.0/24")}})

	// Into the host through the veth: the netstack dials a kernel socket.
	hostAddr := serveEcho(t, a)
	first, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := echoOnce(first, b, hostAddr); err != nil {
		t.Fatalf("netstack -> veth host echo: %v", err)
	}
	// Out of the host through the veth, 4 MB: every full-size segment must
	// reach the netstack with a checksum it accepts.
	_, port, _ := net.SplitHostPort(serveEcho(t, b))
	stackAddr := net.JoinHostPort("10.210.2.1", port)
	c, err := net.DialTimeout("tcp", stackAddr, 10*time.Second)
	if err != nil {
		t.Fatalf("host -> netstack through the veth: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	data := make([]byte, 4<<20)
	rand.Read(data)
	go c.Write(data)
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("4 MB echo through the veth: %v (equal %v)", err, bytes.Equal(got, data))
	}

	a.Close()
	if _, err := netlink.LinkByName(DefaultInterfaceName); err == nil {
		t.Fatal("interface still exists after Close")
	}
	if _, err := netlink.LinkByName(vethPeerName(DefaultInterfaceName)); err == nil {
		t.Fatal("the agent's end still exists after Close")
	}
	if _, err := netlink.RouteGet(net.ParseIP("10.210.2.1")); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("route lookup for a mesh address after close: %v, want EHOSTUNREACH", err)
	}
}

// Without CAP_NET_ADMIN and without /dev/net/tun the netstack is the only
// way, and the device says which capability is missing.
func TestNoTUNNoRootSaysWhichCapability(t *testing.T) {
	if !runIsolatedIn(t, true, true) {
		return
	}
	k, _ := GeneratePrivateKey()
	d, err := Open(context.Background(), Config{PrivateKey: k, Address: netip.MustParseAddr("10.210.6.1"), ListenPort: 51906})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer d.Close()
	if d.Mode() != ModeNetstack || d.Link() != LinkNetstack || !strings.Contains(d.NetstackReason(), "CAP_NET_ADMIN") {
		t.Fatalf("mode %s link %s reason %q; want netstack naming CAP_NET_ADMIN", d.Mode(), d.Link(), d.NetstackReason())
	}
}
