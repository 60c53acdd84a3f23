package lab

import (
	"context"
	"fmt"
	"net/netip"
)

// NATKind selects what stands between a host and the internet.
type NATKind int

const (
	// NATNone puts the host directly on the internet.
	NATNone NATKind = iota
	// NATEndpointIndependent is Linux masquerade as home routers do it: a
	// socket keeps its source port (mapping independent of the destination)
	// unless that port is taken, so hole punching works.
	NATEndpointIndependent
	// NATSymmetric is masquerade with fully-random ports: each destination
	// sees a different, unpredictable source port.
	NATSymmetric
)

func (k NATKind) String() string {
	switch k {
	case NATNone:
		return "none"
	case NATEndpointIndependent:
		return "endpoint-independent"
	case NATSymmetric:
		return "symmetric"
	}
	return fmt.Sprintf("NATKind(%d)", int(k))
}

// Router is a NAT router namespace: "wan" on the internet, "lan" towards
// the one host behind it.
type Router struct {
	Name string // "r1", "r2", …
	NS   string
	WAN  netip.Addr
	LAN  netip.Prefix // 198.19.N.0/24; the router is .1, the host .2
	Kind NATKind
}

// plugBehindNAT makes a router for h and puts h on its LAN.
func (l *Lab) plugBehindNAT(ctx context.Context, h *Host, kind NATKind) error {
	if kind != NATEndpointIndependent && kind != NATSymmetric {
		return fmt.Errorf("unknown NAT kind %v", kind)
	}
	n, err := l.allocLAN()
	if err != nil {
		return err
	}
	wan, err := l.allocWAN()
	if err != nil {
		return err
	}
	r := &Router{
		Name: fmt.Sprintf("r%d", n),
		WAN:  wan,
		LAN:  netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(n), 0}), 24),
		Kind: kind,
	}
	r.NS = l.Prefix + "-" + r.Name
	if err := addNetns(ctx, r.NS); err != nil {
		return err
	}
	l.trackNS(r.NS)
	routerLAN := netip.AddrFrom4([4]byte{198, 19, byte(n), 1})
	h.Addr = netip.AddrFrom4([4]byte{198, 19, byte(n), 2})
	h.PublicAddr = wan
	h.Router = r
	h.farNS, h.farIf = r.NS, "lan"

	if err := ipBatch(ctx, l.internet,
		fmt.Sprintf("link add w%s type veth peer name wan netns %s", r.Name, r.NS),
		fmt.Sprintf("link set w%s master br0 up", r.Name),
	); err != nil {
		return err
	}
	if err := ipBatch(ctx, r.NS,
		fmt.Sprintf("addr add %s/16 dev wan", wan),
		"link set wan up",
		"route add default via "+Gateway.String(),
		fmt.Sprintf("link add lan type veth peer name eth0 netns %s", h.NS),
		fmt.Sprintf("addr add %s/24 dev lan", routerLAN),
		"link set lan up",
	); err != nil {
		return err
	}
	// sysctl(8) may be missing on a minimal system; sh is not.
	if _, err := nsRun(ctx, r.NS, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"); err != nil {
		return fmt.Errorf("router %s: enable forwarding: %w", r.Name, err)
	}
	masq := "masquerade"
	if kind == NATSymmetric {
		masq = "masquerade fully-random"
	}
	if err := nft(ctx, r.NS, fmt.Sprintf(`table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" %s
	}
}
`, masq)); err != nil {
		return fmt.Errorf("router %s: %w", r.Name, err)
	}
	if err := ipBatch(ctx, h.NS,
		fmt.Sprintf("addr add %s/24 dev eth0", h.Addr),
		"link set eth0 up",
		"route add default via "+routerLAN.String(),
	); err != nil {
		return err
	}
	l.mu.Lock()
	l.routers = append(l.routers, r)
	l.mu.Unlock()
	return nil
}
