package lab

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
)

// The lab drives ip(8), nft(8) and tc(8) rather than vishvananda/netlink.
// Each step is then one line a person can paste into a shell to reproduce a
// failure (the error carries the exact command), the lab is debugged with
// the same tools, and there is no LockOSThread/netns.Set juggling, where one
// mistake leaves a Go thread in the wrong namespace and poisons unrelated
// code. The price is a fork per step (about a millisecond); a host costs a
// handful of them, which stays cheap at 20 hosts.

// run executes a command in the current namespace and returns its standard
// output. The error names the command and carries its standard error.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", quoteCmd(name, args), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// nsRun runs a command inside the named namespace.
func nsRun(ctx context.Context, ns, name string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// ipBatch feeds several ip(8) commands to one process in namespace ns
// (`ip -n NS -batch -`), so a host costs one fork rather than one per step.
func ipBatch(ctx context.Context, ns string, lines ...string) error {
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip -n %s -batch with %q: %w: %s", ns, lines, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// nft loads an nftables script into namespace ns in one transaction.
func nft(ctx context.Context, ns, script string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft -f in %s with %q: %w: %s", ns, script, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// addNetns creates a namespace; it fails if the name exists.
func addNetns(ctx context.Context, ns string) error {
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return err
	}
	// Loopback is down in a new namespace; everything local needs it.
	return ipBatch(ctx, ns, "link set lo up")
}

// deleteNetns kills whatever still runs in a namespace and deletes it.
// A namespace with live processes would otherwise outlive its name.
func deleteNetns(ctx context.Context, ns string) error {
	if out, err := run(ctx, "ip", "netns", "pids", ns); err == nil {
		for f := range strings.FieldsSeq(out) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if _, err := run(ctx, "ip", "netns", "del", ns); err != nil {
		return fmt.Errorf("delete namespace %s: %w", ns, err)
	}
	return nil
}

func quoteCmd(name string, args []string) string {
	parts := []string{name}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\"'") {
			a = fmt.Sprintf("%q", a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
