package runtime

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
)

// Guard is one service's security group on this machine: new connections
// to Protect (its containers here) are accepted only from Allow (the
// addresses its allow-from names resolve to, and its own containers).
type Guard struct {
	Service string
	Protect []netip.Addr
	Allow   []netip.Addr
}

// Groups enforces security groups with an nftables table of the agent's
// own (`ip uncloud`, or `ip uncloud_<tag>` in tests): one pair of address
// sets per guard and a forward-hook chain that drops connections to a
// protected container from outside its set. A drop in any base chain is
// final in nftables, so Docker's or iptables' ACCEPTs cannot undo it; the
// whole table is replaced in one transaction, so the sets never appear
// half-updated, and Remove deletes only that table.
type Groups struct {
	// Tag names the table uncloud_<Tag>; empty means "uncloud".
	Tag string
	// Netns, if set, runs nft in that named network namespace (tests).
	Netns string
	mu    sync.Mutex
}

func (g *Groups) table() string {
	if g.Tag != "" {
		return "uncloud_" + g.Tag
	}
	return "uncloud"
}

// Script is the nft input that replaces the table with guards. The first
// line makes sure the table exists so that the delete cannot fail.
func (g *Groups) Script(guards []Guard) string {
	t := g.table()
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {}\ndelete table ip %s\ntable ip %s {\n", t, t, t)
	for i, gd := range guards {
		fmt.Fprintf(&b, "\tset protect_%d {\n\t\ttype ipv4_addr\n\t\tcomment %q\n%s\t}\n", i, "service "+gd.Service, elements(gd.Protect))
		fmt.Fprintf(&b, "\tset allow_%d {\n\t\ttype ipv4_addr\n%s\t}\n", i, elements(gd.Allow))
	}
	// Priority -10: before iptables' filter chains (0); a drop is final
	// whatever runs after. Only the original direction is checked, so a
	// protected container's own outgoing connections get their replies.
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority -10; policy accept;\n")
	for i := range guards {
		fmt.Fprintf(&b, "\t\tip daddr @protect_%d ct direction original ip saddr != @allow_%d counter drop\n", i, i)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func elements(addrs []netip.Addr) string {
	var s []string
	for _, a := range addrs {
		if a.Is4() {
			s = append(s, a.String())
		}
	}
	slices.Sort(s)
	s = slices.Compact(s)
	if len(s) == 0 {
		return ""
	}
	return "\t\telements = { " + strings.Join(s, ", ") + " }\n"
}

func (g *Groups) nft(ctx context.Context, stdin string, args ...string) error {
	name, argv := "nft", args
	if g.Netns != "" {
		name, argv = "ip", append([]string{"netns", "exec", g.Netns, "nft"}, args...)
	}
	cmd := exec.CommandContext(ctx, name, argv...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Apply replaces the table with guards, atomically. With no guard the
// table stays, empty, so that a later guard needs no other step.
func (g *Groups) Apply(ctx context.Context, guards []Guard) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.nft(ctx, g.Script(guards), "-f", "-"); err != nil {
		return fmt.Errorf("security groups (table ip %s): %w", g.table(), err)
	}
	return nil
}

// Remove deletes the table, if it is there.
func (g *Groups) Remove(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.table()
	return g.nft(ctx, fmt.Sprintf("table ip %s {}\ndelete table ip %s\n", t, t), "-f", "-")
}
