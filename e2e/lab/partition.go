package lab

import (
	"context"
	"fmt"
	"strings"
)

// Partition is a network split made on the internet bridge: frames
// between hosts of different groups are dropped, traffic inside a group
// and to hosts in no group flows as before. It is done on the wire, not
// in the hosts, so nothing an agent does can get around it.
type Partition struct {
	lab   *Lab
	table string
}

// Partition splits the given groups of hosts from each other until Heal.
// A host behind a NAT is split by its router's WAN address.
func (l *Lab) Partition(ctx context.Context, groups ...[]*Host) (*Partition, error) {
	if len(groups) < 2 {
		return nil, fmt.Errorf("partition: need at least two groups, got %d", len(groups))
	}
	p := &Partition{lab: l, table: l.counterName()}
	var b strings.Builder
	fmt.Fprintf(&b, "table bridge %s {\n\tchain split {\n\t\ttype filter hook forward priority -200; policy accept;\n", p.table)
	for i, a := range groups {
		for j, c := range groups {
			if i == j {
				continue
			}
			fmt.Fprintf(&b, "\t\tip saddr { %s } ip daddr { %s } drop\n", addrSet(a), addrSet(c))
		}
	}
	b.WriteString("\t}\n}\n")
	if err := nft(ctx, l.internet, b.String()); err != nil {
		return nil, fmt.Errorf("partition: %w", err)
	}
	return p, nil
}

// Heal removes the split.
func (p *Partition) Heal(ctx context.Context) error {
	if err := nft(ctx, p.lab.internet, fmt.Sprintf("delete table bridge %s\n", p.table)); err != nil {
		return fmt.Errorf("heal partition: %w", err)
	}
	return nil
}

func addrSet(hosts []*Host) string {
	seen := map[string]bool{}
	var out []string
	for _, h := range hosts {
		if a := h.PublicAddr.String(); !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return strings.Join(out, ", ")
}
