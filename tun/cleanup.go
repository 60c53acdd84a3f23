package tun

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Leftovers are what a kernel-mode agent leaves in the host's network
// stack (uncloud uninstall): its TUN interface, if it is still there, and
// the routes to the mesh it installed, the fail-closed one included.
type Leftovers struct {
	Interface string // empty when no such TUN interface exists
	Routes    []netlink.Route
}

// FindLeftovers looks for the TUN interface name (zero: the default) and
// for every route into mesh (zero: meshaddr.Mesh()) in any table that
// carries uncloud's route protocol: only what the agent added, never a
// route an operator made, even to the same prefix.
func FindLeftovers(name string, mesh netip.Prefix) (Leftovers, error) {
	in := Config{InterfaceName: name, MeshPrefix: mesh}
	cfg := in.withDefaults()
	var l Leftovers
	if link, err := netlink.LinkByName(cfg.InterfaceName); err == nil {
		if t := link.Type(); t == "tuntap" || t == "veth" {
			l.Interface = cfg.InterfaceName
		}
	} else if _, notFound := err.(netlink.LinkNotFoundError); !notFound {
		return l, fmt.Errorf("look up interface %q: %w", cfg.InterfaceName, err)
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: routeProtocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return l, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		p, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		if ok && cfg.MeshPrefix.Overlaps(netip.PrefixFrom(p.Unmap(), ones)) {
			l.Routes = append(l.Routes, r)
		}
	}
	return l, nil
}

// DescribeRoute is r as `ip route` would name it, for plans and reports.
func DescribeRoute(r netlink.Route) string {
	kind := ""
	if r.Type == unix.RTN_UNREACHABLE {
		kind = "unreachable "
	}
	s := kind + r.Dst.String()
	if r.LinkIndex > 0 {
		if link, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			s += " dev " + link.Attrs().Name
		}
	}
	if r.Priority > 0 {
		s += fmt.Sprintf(" metric %d", r.Priority)
	}
	if r.Table != unix.RT_TABLE_MAIN {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	if r.Type == unix.RTN_UNREACHABLE && r.Priority == failClosedMetric {
		s += " (the fail-closed route)"
	}
	return s
}

// RemoveInterface deletes the TUN interface name if it is still there
// (a stopped agent's goes with it; this is for one that cannot stop).
func RemoveInterface(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if _, notFound := err.(netlink.LinkNotFoundError); notFound {
			return nil
		}
		return fmt.Errorf("look up interface %q: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("delete interface %q: %w", name, err)
	}
	return nil
}

// RemoveRoute deletes one route FindLeftovers found; one already gone is
// not an error.
func RemoveRoute(r netlink.Route) error {
	if err := netlink.RouteDel(&r); err != nil && err != unix.ESRCH {
		return fmt.Errorf("delete route %s: %w", DescribeRoute(r), err)
	}
	return nil
}
