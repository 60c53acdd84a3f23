package tun

import (
	"github.com/vishvananda/netlink"
)

// fallbackUnderlayMTU is used when no route or link says otherwise.
const fallbackUnderlayMTU = 1500

// underlayMTU is the MTU of the links that carry the encrypted packets:
// those behind the default routes, or, on a host without a default route
// (a lab namespace, an isolated LAN), the smallest MTU of its up links.
// Reading routes and links needs no privilege, so netstack mode uses it too.
// The mesh interface and its veth stand-in's other end carry no underlay.
func underlayMTU(skipLink string) int {
	mtu := 0
	consider := func(l netlink.Link) {
		a := l.Attrs()
		if a == nil || a.Name == skipLink || a.Name == vethPeerName(skipLink) || a.Flags&1 == 0 || a.MTU <= 0 {
			return
		}
		if mtu == 0 || a.MTU < mtu {
			mtu = a.MTU
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err == nil {
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				consider(l)
			}
		}
	}
	if mtu == 0 {
		if links, err := netlink.LinkList(); err == nil {
			for _, l := range links {
				if l.Type() == "loopback" || l.Attrs().Flags&1 == 0 {
					continue
				}
				consider(l)
			}
		}
	}
	if mtu == 0 {
		return fallbackUnderlayMTU
	}
	return mtu
}
