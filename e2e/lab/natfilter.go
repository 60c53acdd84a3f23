package lab

import (
	"context"
	"fmt"
	"net/netip"
)

// ReplyOnlyFilter makes the router's WAN side behave like a home router's:
// only replies to what the host sent (conntrack: the exact address and
// port it sent to) come in; anything unsolicited is dropped, to the host
// and to the router itself.
func (r *Router) ReplyOnlyFilter(ctx context.Context) error {
	if err := nft(ctx, r.NS, `table inet wanfilter {
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "wan" ct state established,related accept
		iifname "wan" drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wan" ct state established,related accept
		iifname "wan" drop
	}
}
`); err != nil {
		return fmt.Errorf("router %s: reply-only filter: %w", r.Name, err)
	}
	return nil
}

// DropUnsolicitedUDP makes a host on the internet drop every UDP packet
// that does not answer one it sent: a public address behind a stateful
// firewall.
func (h *Host) DropUnsolicitedUDP(ctx context.Context) error {
	if err := nft(ctx, h.NS, `table inet hostfw {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "eth0" meta l4proto udp ct state new,invalid drop
	}
}
`); err != nil {
		return fmt.Errorf("host %s: drop unsolicited UDP: %w", h.Name, err)
	}
	return nil
}

// BlockPeer makes the router drop all traffic between its host and addr
// (an address on the internet), both ways, until UnblockPeer.
func (r *Router) BlockPeer(ctx context.Context, addr netip.Addr) error {
	if err := nft(ctx, r.NS, fmt.Sprintf(`table inet block {
	chain forward {
		type filter hook forward priority -10; policy accept;
		ip daddr %[1]s drop
		ip saddr %[1]s drop
	}
}
`, addr)); err != nil {
		return fmt.Errorf("router %s: block %v: %w", r.Name, addr, err)
	}
	return nil
}

// UnblockPeer undoes BlockPeer.
func (r *Router) UnblockPeer(ctx context.Context) error {
	if err := nft(ctx, r.NS, "delete table inet block\n"); err != nil {
		return fmt.Errorf("router %s: unblock: %w", r.Name, err)
	}
	return nil
}

// Reboot emulates a home router's reboot: every NAT mapping is forgotten
// (conntrack flushed) and the host's traffic leaves from a new public
// port, publicPort, still the same one for every destination (endpoint-
// independent). Needs conntrack(8).
func (r *Router) Reboot(ctx context.Context, publicPort uint16) error {
	if r.Kind != NATEndpointIndependent {
		return fmt.Errorf("router %s: Reboot emulates endpoint-independent routers only", r.Name)
	}
	if err := nft(ctx, r.NS, fmt.Sprintf(`flush chain ip nat postrouting
add rule ip nat postrouting oifname "wan" meta l4proto udp masquerade to :%d
add rule ip nat postrouting oifname "wan" masquerade
`, publicPort)); err != nil {
		return fmt.Errorf("router %s: reboot: %w", r.Name, err)
	}
	if _, err := nsRun(ctx, r.NS, "conntrack", "-F"); err != nil {
		return fmt.Errorf("router %s: reboot: flush conntrack (Debian: apt-get install conntrack): %w", r.Name, err)
	}
	return nil
}
