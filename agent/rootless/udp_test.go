package rootless

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestHostUDPHandover(t *testing.T) {
	f, entry, err := OpenHostUDP(0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k, v, _ := strings.Cut(entry, "=")
	if k != EnvUDP || v != strconv.Itoa(int(f.Fd())) {
		t.Fatalf("entry %q for fd %d", entry, f.Fd())
	}
	// The starter's copy must survive exec: no close-on-exec.
	if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC != 0 {
		t.Fatalf("starter's socket flags %#x (%v): close-on-exec set", fl, err)
	}
	env := map[string]string{EnvUDP: v}
	got, err := TakeHostUDP(func(k string) string { return env[k] }, func(k string) error { delete(env, k); return nil })
	if err != nil || got == nil {
		t.Fatalf("take: %v, %v", got, err)
	}
	if _, ok := env[EnvUDP]; ok {
		t.Error("the variable stays set after the take")
	}
	// Inside, the agent's children must not inherit it.
	if fl, _ := unix.FcntlInt(got.Fd(), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
		t.Error("taken socket lacks close-on-exec")
	}
	pc, err := net.FilePacketConn(got)
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()

	for _, bad := range []string{"x", "1", "-3", "99999"} {
		env := map[string]string{EnvUDP: bad}
		if f, err := TakeHostUDP(func(k string) string { return env[k] }, func(k string) error { delete(env, k); return nil }); err == nil {
			t.Errorf("%s=%q taken: %v", EnvUDP, bad, f)
		}
	}
	if f, err := TakeHostUDP(func(string) string { return "" }, func(string) error { return nil }); f != nil || err != nil {
		t.Errorf("no variable: %v, %v; want nothing", f, err)
	}
}
