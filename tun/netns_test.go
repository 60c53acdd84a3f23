package tun

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/vishvananda/netlink"
)

// childEnv marks a test process that already runs in its own network
// namespace, so the test body may create interfaces and routes freely.
const childEnv = "UNCLOUD_TUN_TEST_CHILD"

// runIsolated re-runs the calling test in a fresh network namespace (and,
// with asUser, as an unprivileged user) and reports whether the caller is
// that child and should do the work. Re-executing is more robust than
// switching a thread's namespace: wireguard-go and netlink start goroutines
// on threads of their own, which would stay in the original namespace.
func runIsolated(t *testing.T, asUser bool) bool {
	t.Helper()
	if os.Getenv(childEnv) != "" {
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
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if asUser {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	if testkit.Emulator() != "" {
		// qemu-user refuses clone flags it does not emulate (CLONE_NEWNET
		// gives EINVAL), so the host's unshare(1) makes the namespace and
		// starts the emulator in it, through setpriv(1) when the child must
		// not be root (unshare needs root first).
		args := append([]string{"--net"}, cmd.Args...)
		if asUser {
			args = append([]string{"--net", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, cmd.Args...)
		}
		env := cmd.Env
		cmd = exec.Command("unshare", args...)
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
