package runtime

import (
	"os"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// inFreshNetns runs body on a thread of its own in a new network
// namespace; commands it starts inherit that namespace. The thread is
// not reused afterwards (it stays locked when its goroutine ends). body
// reports failures with t.Error: t.Fatal belongs to the test goroutine.
func inFreshNetns(t *testing.T, body func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace)")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		body()
	}()
	<-done
}

// TestRulesetGeneration: the generation stays put while nobody changes
// the ruleset and moves with every change, made by nft or iptables-nft.
func TestRulesetGeneration(t *testing.T) {
	for _, bin := range []string{"nft", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("no %s", bin)
		}
	}
	nftIPTables := (&IPTables{}).NFTBackend(t.Context())
	inFreshNetns(t, func() {
		gen := func() uint32 {
			g, err := RulesetGeneration()
			if err != nil {
				t.Errorf("generation: %v", err)
			}
			return g
		}
		run := func(args ...string) bool {
			out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
			if err != nil {
				t.Errorf("%v: %v: %s", args, err, out)
			}
			return err == nil
		}
		g0 := gen()
		if g1 := gen(); g1 != g0 {
			t.Errorf("generation moved from %d to %d with no change", g0, g1)
		}
		if !run("nft", "add", "table", "ip", "uc_gen_test") {
			return
		}
		g2 := gen()
		if g2 == g0 {
			t.Errorf("generation still %d after nft added a table", g2)
		}
		if !nftIPTables {
			t.Log("iptables is not the nf_tables one: its changes are not checked")
			return
		}
		if !run("iptables", "-w", "-N", "UC-GEN-TEST") {
			return
		}
		if g3 := gen(); g3 == g2 {
			t.Errorf("generation still %d after iptables added a chain", g3)
		}
	})
}
