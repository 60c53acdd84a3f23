package tun

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// childEnv marks a test process that already runs in its own network
// namespace, so the test body may create interfaces and routes freely.
const childEnv = "UNCLOUD_TUN_TEST_CHILD"

// noTUNEnv marks a child that also has its own mount namespace, in which
// /dev/net is an empty tmpfs: a host without /dev/net/tun.
const noTUNEnv = "UNCLOUD_TUN_TEST_NO_TUN"

// runIsolated re-runs the calling test in a fresh network namespace (and,
// with asUser, as an unprivileged user) and reports whether the caller is
// that child and should do the work. Re-executing is more robust than
// switching a thread's namespace: wireguard-go and netlink start goroutines
// on threads of their own, which would stay in the original namespace.
func runIsolated(t *testing.T, asUser bool) bool {
	t.Helper()
	return runIsolatedIn(t, asUser, false)
}

// runIsolatedIn is runIsolated, and with noTUN the child finds no
// /dev/net/tun (noTUNEnv).
func runIsolatedIn(t *testing.T, asUser, noTUN bool) bool {
	t.Helper()
	if os.Getenv(childEnv) != "" {
		if os.Getenv(noTUNEnv) != "" {
			// Private first, so the tmpfs stays in this namespace.
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				t.Fatalf("make mounts private: %v", err)
			}
			if err := unix.Mount("none", "/dev/net", "tmpfs", 0, ""); err != nil {
				t.Fatalf("hide /dev/net: %v", err)
			}
		}
		if lo, err := netlink.LinkByName("lo"); err == nil {
			netlink.LinkSetUp(lo)
		}
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace (CI runs as root)")
	}
	bin := os.Args[0]
	if asUser {
		// The test binary usually sits in a 0700 directory; copy it where
		// an unprivileged user can execute it.
		dir, err := os.MkdirTemp("", "uncloud-tun-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(dir, "tun.test")
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := testkit.BinaryCommand(bin, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	if noTUN && asUser {
		// An unprivileged child cannot mount: hide /dev/net before
		// dropping to nobody.
		cmd = exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c",
			`mount -t tmpfs none /dev/net && exec setpriv --reuid=65534 --regid=65534 --clear-groups "$0" "$@"`}, cmd.Args...)...)
	}
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if noTUN && !asUser {
		cmd.Env = append(cmd.Env, noTUNEnv+"=1")
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNS
	}
	if asUser {
		if !noTUN {
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
		}
	}
	if testkit.Emulator() != "" {
		// qemu-user refuses clone flags it does not emulate (CLONE_NEWNET
		// gives EINVAL), so the host's unshare(1) makes the namespaces and
		// starts the emulator in them, through setpriv(1) when the child
		// must not be root (unshare needs root first).
		flags := []string{"--net"}
		switch {
		case noTUN && !asUser:
			flags = append(flags, "--mount") // the child hides /dev/net itself
		case asUser && !noTUN:
			flags = append(flags, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
		}
		env := cmd.Env
		cmd = exec.Command("unshare", append(flags, cmd.Args...)...)
		cmd.Env = env
	}
	if asUser {
		cmd.Dir = filepath.Dir(bin)
	}
	out, err := cmd.CombinedOutput()
	t.Logf("isolated run:\n%s", out)
	if err != nil {
		t.Fatalf("isolated run failed: %v", err)
	}
	return false
}
