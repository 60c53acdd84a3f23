package runtime

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestIPTablesInNamespace applies the kernel-mode rules with the real
// iptables in a fresh network namespace: every rule is one the installed
// iptables accepts (the non-contiguous machine mask, multiport, conntrack),
// Apply twice leaves one copy of everything, and Remove takes out exactly
// what Apply added, leaving another program's rules and chains alone.
func TestIPTablesInNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, iptables)")
	}
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("no iptables-restore")
	}
	ctx := context.Background()
	ns := fmt.Sprintf("uc-fwtest-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return string(out)
	}
	// Another program's rules, which Remove must leave.
	sh("iptables", "-w", "-N", "OTHER")
	sh("iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "OTHER")
	sh("iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-s", "192.0.2.1", "-j", "DROP")

	fw := &IPTables{Netns: ns}
	r := testRules("uncloud")
	for i := range 2 {
		if err := fw.Apply(ctx, r); err != nil {
			t.Fatalf("apply #%d: %v", i+1, err)
		}
	}
	saved := sh("iptables-save")
	for _, c := range r.Chains() {
		jump := fmt.Sprintf("-A %s -j %s\n", c.From[len(c.From)-1], c.Name)
		if c.From[0] == "DOCKER-USER" {
			jump = fmt.Sprintf("-A FORWARD -j %s\n", c.Name) // no Docker here: the fallback
		}
		if n := strings.Count(saved, jump); n != 1 {
			t.Errorf("%d jumps %q after two applies, want 1", n, strings.TrimSpace(jump))
		}
		if n, want := strings.Count(saved, "-A "+c.Name+" "), len(c.Rules); n != want {
			t.Errorf("chain %s has %d rules after two applies, want %d", c.Name, n, want)
		}
	}
	// The kernel kept the machine mask as written (not widened to a prefix).
	if !strings.Contains(saved, "-s 10.210.0.1/255.255.0.255") {
		t.Errorf("machine-address match not in iptables-save:\n%s", saved)
	}
	for i := range 2 {
		if err := fw.Remove(ctx, r); err != nil {
			t.Fatalf("remove #%d: %v", i+1, err)
		}
	}
	saved = sh("iptables-save")
	if strings.Contains(saved, "UNCLOUD") {
		t.Errorf("rules left after Remove:\n%s", saved)
	}
	for _, want := range []string{":OTHER", "--dport 22 -j OTHER", "-s 192.0.2.1/32 -j DROP"} {
		if !strings.Contains(saved, want) {
			t.Errorf("Remove took out another program's %q:\n%s", want, saved)
		}
	}
}
