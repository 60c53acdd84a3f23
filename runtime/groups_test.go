package runtime

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestGroupsScript(t *testing.T) {
	g := &Groups{Tag: "T"}
	for _, tc := range []struct {
		name   string
		guards []Guard
		want   []string
		absent []string
	}{
		{"no guard: an empty table, nothing dropped", nil,
			[]string{"table ip uncloud_T {}\ndelete table ip uncloud_T\n", "hook forward priority -10; policy accept;"},
			[]string{"drop", "set "}},
		{"one guard", []Guard{{Service: "db", Protect: addrs("10.210.1.5", "10.210.1.6"), Allow: addrs("10.210.2.7", "10.210.1.5", "10.210.2.7")}},
			[]string{"set protect_0 {", `comment "service db"`, "elements = { 10.210.1.5, 10.210.1.6 }",
				"set allow_0 {", "elements = { 10.210.1.5, 10.210.2.7 }", // sorted, deduplicated
				"ip daddr @protect_0 ct direction original ip saddr != @allow_0 counter drop"}, nil},
		{"an empty allow set drops every new connection", []Guard{{Service: "db", Protect: addrs("10.210.1.5")}},
			[]string{"set allow_0 {\n\t\ttype ipv4_addr\n\t}", "ip saddr != @allow_0 counter drop"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := g.Script(tc.guards)
			for _, w := range tc.want {
				if !strings.Contains(s, w) {
					t.Errorf("script lacks %q:\n%s", w, s)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(s, a) {
					t.Errorf("script has %q:\n%s", a, s)
				}
			}
		})
	}
}

// TestGroupsInNamespace loads the table with the real nft: Apply replaces
// the sets in place, and Remove deletes only the agent's table.
func TestGroupsInNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nft)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft")
	}
	ctx := context.Background()
	ns := fmt.Sprintf("uc-sgtest-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	list := func() string {
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v: %s", err, out)
		}
		return string(out)
	}
	if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "add", "table", "ip", "other").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	g := &Groups{Tag: "T", Netns: ns}
	if err := g.Apply(ctx, []Guard{{Service: "db", Protect: addrs("10.210.1.5"), Allow: addrs("10.210.2.7")}}); err != nil {
		t.Fatal(err)
	}
	if err := g.Apply(ctx, []Guard{{Service: "db", Protect: addrs("10.210.1.5"), Allow: addrs("10.210.2.7", "10.210.3.9")}}); err != nil {
		t.Fatal(err)
	}
	rs := list()
	if !strings.Contains(rs, "10.210.3.9") || strings.Count(rs, "table ip uncloud_T") != 1 || strings.Count(rs, "saddr != @allow_0") != 1 {
		t.Errorf("after two applies the ruleset is not one table with the second sets:\n%s", rs)
	}
	for range 2 {
		if err := g.Remove(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rs = list()
	if strings.Contains(rs, "uncloud_T") || !strings.Contains(rs, "table ip other") {
		t.Errorf("Remove must delete the agent's table and only it:\n%s", rs)
	}
}
