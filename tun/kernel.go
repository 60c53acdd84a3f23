package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// failClosedMetric puts the unreachable route behind the interface route
// (metric 0) but ahead of nothing else that could match the mesh prefix:
// a default route never matches more specifically than the /16.
const failClosedMetric = 0x7fffffff

// routeProtocol marks the routes uncloud installs (see /etc/iproute2/rt_protos),
// so an operator can tell them apart and the agent removes only its own.
const routeProtocol = netlink.RouteProtocol(0x55) // 'U'

// tunDevicePath is the clone device every TUN interface is made through.
const tunDevicePath = "/dev/net/tun"

// kernelLink is a configured kernel interface: a TUN, or its veth stand-in.
type kernelLink struct {
	dev  wgtun.Device
	name string
	veth bool // a veth pair and a packet socket stand in for the TUN (veth.go)
}

// openKernel creates the TUN interface and configures it through netlink:
// the /32 mesh address, the MTU, the mesh route and the fail-closed route.
// The fail-closed route goes in first, so a failure halfway still leaves
// the mesh prefix unreachable rather than routed out in clear text.
func openKernel(cfg Config, mtu int) (*kernelLink, error) {
	if err := ensureFailClosedRoute(cfg.MeshPrefix); err != nil {
		return nil, err
	}
	// wireguard-go reports a missing device node in words only; look first,
	// so the caller can tell "no TUN on this host" from a real failure.
	if _, err := os.Stat(tunDevicePath); err != nil {
		return nil, fmt.Errorf("create TUN %q: %w", cfg.InterfaceName, err)
	}
	dev, err := wgtun.CreateTUN(cfg.InterfaceName, mtu)
	if err != nil {
		return nil, fmt.Errorf("create TUN %q: %w", cfg.InterfaceName, err)
	}
	name, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("read TUN name: %w", err)
	}
	if err := configureLink(name, cfg.Address, cfg.MeshPrefix, mtu); err != nil {
		dev.Close()
		return nil, err
	}
	return &kernelLink{dev: dev, name: name}, nil
}

func configureLink(name string, addr netip.Addr, mesh netip.Prefix, mtu int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %q: %w", name, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("set mtu %d on %q: %w", mtu, name, err)
	}
	host := &netlink.Addr{IPNet: prefixToIPNet(netip.PrefixFrom(addr, addr.BitLen()))}
	if err := netlink.AddrReplace(link, host); err != nil {
		return fmt.Errorf("set address %v on %q: %w", addr, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %q up: %w", name, err)
	}
	route := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       prefixToIPNet(mesh),
		Src:       net.IP(addr.AsSlice()),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  routeProtocol,
	}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("route %v via %q: %w", mesh, name, err)
	}
	return nil
}

// ensureFailClosedRoute installs `unreachable <mesh> metric 0x7fffffff`. It
// is not tied to any link, so it outlives the TUN device and the agent
// (kill -9 included): with the interface gone, mesh traffic gets
// EHOSTUNREACH instead of leaving through the default route unencrypted.
func ensureFailClosedRoute(mesh netip.Prefix) error {
	route := &netlink.Route{
		Dst:      prefixToIPNet(mesh),
		Type:     unix.RTN_UNREACHABLE,
		Priority: failClosedMetric,
		Protocol: routeProtocol,
	}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("install fail-closed route unreachable %v: %w", mesh, err)
	}
	return nil
}

// kernelUnavailable reports whether err means this process cannot have a
// kernel TUN at all (no device node, no CAP_NET_ADMIN), in which case the
// netstack is the right answer rather than a failure.
func kernelUnavailable(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) ||
		errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) ||
		errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO)
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
