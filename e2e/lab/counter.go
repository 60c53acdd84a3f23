package lab

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
)

// Counter counts packets matching an nftables expression at one place in
// the lab. It is how tests prove that nothing leaked in clear text: a
// counter cannot be fooled by a process that lies, and it needs no tcpdump.
type Counter struct {
	ns, family, table string
}

// CountOnInternet counts frames entering the internet bridge from any host
// or router that match expr (nftables syntax, e.g. "ip daddr " + meshaddr.Mesh().String()).
// This is the wire: whatever a host sends out of eth0 unencrypted shows here.
func (l *Lab) CountOnInternet(ctx context.Context, expr string) (*Counter, error) {
	c := &Counter{ns: l.internet, family: "bridge", table: l.counterName()}
	script := fmt.Sprintf(`table bridge %s {
	chain pre {
		type filter hook prerouting priority -300; policy accept;
		%s counter
	}
}
`, c.table, expr)
	if err := nft(ctx, c.ns, script); err != nil {
		return nil, fmt.Errorf("counter %q on the internet: %w", expr, err)
	}
	return c, nil
}

// CountEgress counts packets leaving the host through eth0 (its own and
// forwarded ones) that match expr.
func (h *Host) CountEgress(ctx context.Context, expr string) (*Counter, error) {
	c := &Counter{ns: h.NS, family: "inet", table: h.lab.counterName()}
	script := fmt.Sprintf(`table inet %s {
	chain post {
		type filter hook postrouting priority 300; policy accept;
		oifname "eth0" %s counter
	}
}
`, c.table, expr)
	if err := nft(ctx, c.ns, script); err != nil {
		return nil, fmt.Errorf("counter %q on %s eth0: %w", expr, h.Name, err)
	}
	return c, nil
}

var counterRE = regexp.MustCompile(`counter packets (\d+) bytes (\d+)`)

// Packets returns the number of packets counted so far.
func (c *Counter) Packets(ctx context.Context) (uint64, error) {
	n, _, err := c.read(ctx)
	return n, err
}

// Bytes returns the bytes (whole packets, headers included) counted so far.
func (c *Counter) Bytes(ctx context.Context) (uint64, error) {
	_, n, err := c.read(ctx)
	return n, err
}

func (c *Counter) read(ctx context.Context) (packets, bytes uint64, err error) {
	out, err := nsRun(ctx, c.ns, "nft", "list", "table", c.family, c.table)
	if err != nil {
		return 0, 0, fmt.Errorf("read counter %s: %w", c.table, err)
	}
	m := counterRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("read counter %s: no counter in %q", c.table, out)
	}
	if packets, err = strconv.ParseUint(m[1], 10, 64); err == nil {
		bytes, err = strconv.ParseUint(m[2], 10, 64)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read counter %s: %w", c.table, err)
	}
	return packets, bytes, nil
}

// counterName returns a table name unique within the lab.
func (l *Lab) counterName() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counters++
	return fmt.Sprintf("labcount%d", l.counters)
}
