package tun

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vethPeerSuffix names the agent's end of the pair after the host end
// ("uncloud" → "uncloud-pk"); the name must stay within 15 bytes.
const vethPeerSuffix = "-pk"

// openVeth is kernel mode without /dev/net/tun: a veth pair whose host end
// is the mesh interface (the /32, the route, the MTU, exactly as the TUN
// gets them) and whose other end the agent reads and writes through a
// packet socket. Everything above the interface (the Docker bridge, the
// firewall chains, host programs dialling the mesh) cannot tell the
// difference. It needs CAP_NET_ADMIN (the pair, addresses, routes) and
// CAP_NET_RAW (the packet socket).
func openVeth(cfg Config, mtu int) (*kernelLink, error) {
	if err := ensureFailClosedRoute(cfg.MeshPrefix); err != nil {
		return nil, err
	}
	host, peer := cfg.InterfaceName, vethPeerName(cfg.InterfaceName)
	// A veth outlives a killed agent (a TUN does not): the old pair is
	// ours, and its dead end would swallow the mesh's packets.
	if err := removeStaleVeth(host); err != nil {
		return nil, err
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: mtu}, PeerName: peer}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth pair %s/%s: %w", host, peer, err)
	}
	remove := func() error { return RemoveInterface(host) }
	fail := func(err error) (*kernelLink, error) {
		remove()
		return nil, err
	}
	hostLink, err := netlink.LinkByName(host)
	if err != nil {
		return fail(fmt.Errorf("find link %q: %w", host, err))
	}
	peerLink, err := netlink.LinkByName(peer)
	if err != nil {
		return fail(fmt.Errorf("find link %q: %w", peer, err))
	}
	// No neighbour resolution, as on a point-to-point TUN: the kernel sends
	// every packet to the host end's own address, which the packet socket
	// reads off the other end whatever the destination MAC.
	for _, l := range []netlink.Link{hostLink, peerLink} {
		if err := netlink.LinkSetARPOff(l); err != nil {
			return fail(fmt.Errorf("set noarp on %q: %w", l.Attrs().Name, err))
		}
		// Nothing of IPv6 belongs on either end (the mesh is IPv4 only):
		// no link-local address, no router solicitations. Best effort.
		os.WriteFile("/proc/sys/net/ipv6/conf/"+l.Attrs().Name+"/disable_ipv6", []byte("1"), 0)
	}
	// The packet socket gets what the host end transmits as it is: with
	// checksum offload the TCP and UDP checksums would still be partial,
	// and with segmentation offload one read would be a 64 KB super-packet.
	// Off, the kernel finishes both before the packet reaches the pair.
	if err := disableTxOffloads(host); err != nil {
		return fail(err)
	}
	// The other way, GRO on the host end merges what the agent writes
	// into large packets before they are forwarded to the bridge, as
	// wireguard-go's own GRO does for a TUN: one pass through forwarding
	// and the firewall per 64 KB instead of per packet. The kernel merges
	// only what a sender without segmentation offload sent, hence the
	// agent's end off too; it also turns on the veth's NAPI, which GRO
	// needs. Best effort: without it packets go one by one.
	if err := disableTxOffloads(peer); err == nil {
		if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
			ethtoolSet(fd, host, unix.ETHTOOL_SGRO, 1)
			unix.Close(fd)
		}
	}
	if err := netlink.LinkSetMTU(peerLink, mtu); err != nil {
		return fail(fmt.Errorf("set mtu %d on %q: %w", mtu, peer, err))
	}
	if err := netlink.LinkSetUp(peerLink); err != nil {
		return fail(fmt.Errorf("set %q up: %w", peer, err))
	}
	if err := configureLink(host, cfg.Address, cfg.MeshPrefix, mtu); err != nil {
		return fail(err)
	}
	dev, err := newPacketDevice(host, peerLink.Attrs().Index, hostLink.Attrs().HardwareAddr, mtu, remove)
	if err != nil {
		return fail(err)
	}
	return &kernelLink{dev: dev, name: host, veth: true}, nil
}

func vethPeerName(host string) string {
	if len(host)+len(vethPeerSuffix) > 15 {
		host = host[:15-len(vethPeerSuffix)]
	}
	return host + vethPeerSuffix
}

// removeStaleVeth deletes a veth named name left by an earlier agent. A
// link of another kind by that name is not ours to delete.
func removeStaleVeth(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("look up interface %q: %w", name, err)
	}
	if link.Type() != "veth" {
		return fmt.Errorf("interface %q exists and is a %s, not the agent's veth", name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete stale veth %q: %w", name, err)
	}
	return nil
}

// disableTxOffloads turns off transmit checksumming on name, which takes
// scatter-gather and segmentation offloads with it (the kernel allows none
// of them without checksumming), through the SIOCETHTOOL ioctl.
func disableTxOffloads(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket for ethtool: %w", err)
	}
	defer unix.Close(fd)
	for _, cmd := range []uint32{unix.ETHTOOL_STXCSUM, unix.ETHTOOL_STSO, unix.ETHTOOL_SGSO} {
		if err := ethtoolSet(fd, name, cmd, 0); err != nil {
			return err
		}
	}
	return nil
}

// ethtoolSet is one ETHTOOL_S* command taking a struct ethtool_value.
func ethtoolSet(fd int, name string, cmd, value uint32) error {
	val := &struct{ cmd, data uint32 }{cmd, value}
	// data is an unsafe.Pointer, not a uintptr, so the compiler keeps val
	// where the kernel will find it.
	ifr := &struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}{data: unsafe.Pointer(val)}
	copy(ifr.name[:], name)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr))); e != 0 {
		return fmt.Errorf("ethtool command %#x on %q: %w", cmd, name, e)
	}
	return nil
}
