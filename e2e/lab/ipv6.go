package lab

import (
	"context"
	"fmt"
	"net/netip"
)

// IPv6 underlay. The internet bridge carries IPv4 only until a host asks
// for an IPv6 address (Host.AddIPv6): then the bridge gets Gateway6 and the
// host an address in InternetPrefix6, both inside the lab's namespaces.
// Everything sits in the documentation prefix 2001:db8::/32 (RFC 3849).
var (
	// InternetPrefix6 is the internet's IPv6 /64.
	InternetPrefix6 = netip.MustParsePrefix("2001:db8:18::/64")
	// Gateway6 is the router's IPv6 address on the internet bridge.
	Gateway6 = netip.MustParseAddr("2001:db8:18::1")
)

// ipv6Of maps a host's internet IPv4 address 198.18.A.B to its IPv6
// address 2001:db8:18::A:B (A and B as hexadecimal groups), so the two are
// easy to tell apart and to relate in logs.
func ipv6Of(v4 netip.Addr) netip.Addr {
	b := InternetPrefix6.Addr().As16()
	v := v4.As4()
	b[13], b[15] = v[2], v[3]
	return netip.AddrFrom16(b)
}

// AddIPv6 gives a host on the internet an IPv6 address too (Addr6, also
// PublicAddr6) and a default IPv6 route via Gateway6, alongside its IPv4
// address. Hosts behind a NAT router are not supported. Addresses skip
// duplicate address detection, so they are usable at once.
func (h *Host) AddIPv6(ctx context.Context) error {
	if h.Router != nil {
		return fmt.Errorf("host %s: IPv6 behind a NAT router is not supported", h.Name)
	}
	if err := h.lab.ensureIPv6(ctx); err != nil {
		return err
	}
	addr := ipv6Of(h.Addr)
	if err := ipBatch(ctx, h.NS,
		fmt.Sprintf("addr add %s/%d dev eth0 nodad", addr, InternetPrefix6.Bits()),
		"route add default via "+Gateway6.String(),
	); err != nil {
		return fmt.Errorf("host %s: IPv6 address: %w", h.Name, err)
	}
	h.Addr6, h.PublicAddr6 = addr, addr
	return nil
}

// ensureIPv6 puts Gateway6 on the internet bridge, once.
func (l *Lab) ensureIPv6(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ipv6 {
		return nil
	}
	if err := ipBatch(ctx, l.internet,
		fmt.Sprintf("addr add %s/%d dev br0 nodad", Gateway6, InternetPrefix6.Bits()),
	); err != nil {
		return fmt.Errorf("IPv6 on the internet bridge: %w", err)
	}
	l.ipv6 = true
	return nil
}

// BlockIPv4 drops every IPv4 frame the internet bridge would forward from
// one port to another (ARP and frames to the gateway itself still pass),
// so hosts with IPv6 addresses can only reach each other over IPv6. It
// returns a Partition: Heal lifts the block.
func (l *Lab) BlockIPv4(ctx context.Context) (*Partition, error) {
	p := &Partition{lab: l, table: l.counterName()}
	script := fmt.Sprintf(`table bridge %s {
	chain noip4 {
		type filter hook forward priority -200; policy accept;
		ether type ip drop
	}
}
`, p.table)
	if err := nft(ctx, l.internet, script); err != nil {
		return nil, fmt.Errorf("block IPv4: %w", err)
	}
	return p, nil
}
