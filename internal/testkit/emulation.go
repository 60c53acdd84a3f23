package testkit

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// EmulatorEnv names the variable scripts/test sets when it runs a
// package's tests for another architecture under qemu-user
// (qemu-aarch64-static, qemu-arm-static): its value is the emulator.
// Tests read it instead of guessing from the CPU or /proc, which would
// also match a real ARM machine.
const EmulatorEnv = "UNCLOUD_TEST_EMULATOR"

// emulatedSlowdown is how much longer a timing-bound wait may take under
// qemu-user: translated code ran the gossip and netstack tests 5–15×
// slower than native on the 2-core CI machine.
const emulatedSlowdown = 10

// Emulator returns the emulator the tests run under, or "" natively.
func Emulator() string { return os.Getenv(EmulatorEnv) }

// SkipIfEmulated skips a test that needs what qemu-user does not
// translate (network namespaces of the host kernel reached through
// re-executed helpers, TUN ioctls, raw sockets), saying why.
func SkipIfEmulated(t testing.TB, why string) {
	t.Helper()
	if e := Emulator(); e != "" {
		t.Skipf("under %s: %s", e, why)
	}
}

// Timeout stretches a deadline that bounds how long real work may take,
// so a test under emulation waits longer instead of failing; natively it
// returns d unchanged.
func Timeout(d time.Duration) time.Duration {
	if Emulator() != "" {
		return d * emulatedSlowdown
	}
	return d
}

// BinaryCommand runs a test binary (this one, os.Args[0], or a copy of
// it) with args: a test that needs a fresh process, killed with SIGKILL or
// started in a new namespace. Under qemu-user without binfmt_misc the
// kernel cannot execute the foreign binary itself, so the emulator runs it.
func BinaryCommand(bin string, args ...string) *exec.Cmd {
	if e := Emulator(); e != "" {
		return exec.Command(e, append([]string{bin}, args...)...)
	}
	return exec.Command(bin, args...)
}
