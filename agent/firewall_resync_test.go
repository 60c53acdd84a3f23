package agent

import (
	"log/slog"
	"os"
	"os/exec"
	goruntime "runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/uncloud-mesh/uncloud/runtime"
)

// TestFirewallResyncOnlyOnChange: the periodic resync re-applies the
// rules only when something changed the ruleset since the last apply (or
// the backstop is due), checked in a network namespace of its own with
// the real iptables and nft.
func TestFirewallResyncOnlyOnChange(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace)")
	}
	for _, bin := range []string{"nft", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("no %s", bin)
		}
	}
	if !(&runtime.IPTables{}).NFTBackend(t.Context()) {
		t.Skip("iptables is not the nf_tables one: every resync re-applies")
	}
	done := make(chan struct{})
	go func() { // on a thread of its own, in a new network namespace
		defer close(done)
		goruntime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		f := &hostFirewall{ipt: &runtime.IPTables{}, log: slog.New(slog.DiscardHandler)}
		if !f.resyncDue(t.Context(), time.Second) {
			t.Error("no generation recorded yet, and the resync is not due")
		}
		f.noteGeneration() // as after an apply
		if f.resyncDue(t.Context(), time.Second) {
			t.Error("nothing changed since the apply, and the resync is due")
		}
		for _, cmd := range [][]string{
			{"iptables", "-w", "-N", "SOMEONE-ELSE"},
			{"nft", "add", "table", "ip", "someone_else"},
		} {
			if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
				t.Errorf("%v: %v: %s", cmd, err, out)
				return
			}
			if !f.resyncDue(t.Context(), time.Second) {
				t.Errorf("after %v the resync is not due", cmd)
			}
			f.noteGeneration()
		}
		if !f.resyncDue(t.Context(), firewallBackstop) {
			t.Error("the backstop is due, and the resync is not")
		}
	}()
	<-done
}
