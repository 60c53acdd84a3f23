package rootless

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestHostSideHandoff: what Handoff describes, TakeHostSide takes back
// (here in the same process; across exec the descriptors are the same
// numbers): listeners by address, and no close-on-exec until taken.
func TestHostSideHandoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	spec, err := Handoff(map[string]*os.File{addr: f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, fdText, _ := strings.Cut(spec, "@")
	fd, _ := strconv.Atoi(fdText)
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC != 0 {
		t.Fatalf("handed-off descriptor %d: flags %#x, %v; want no close-on-exec", fd, flags, err)
	}
	hs, err := TakeHostSide(spec)
	if err != nil {
		t.Fatal(err)
	}
	if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("taken descriptor %d has no close-on-exec", fd)
	}
	if got := hs.Addrs(); len(got) != 1 || got[0] != addr {
		t.Fatalf("addresses %v, want [%s]", got, addr)
	}
	served, err := hs.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer served.Close()
	go func() {
		if c, err := served.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("through the handed-in listener: %q, %v", buf, err)
	}
	c.Close()
	if _, err := hs.Listen("127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "no socket on the host's 127.0.0.1:1") {
		t.Errorf("Listen on an address not handed in: %v", err)
	}
	if hs.Dialer() != nil {
		t.Error("a dialer without a helper socket")
	}
	again, err := hs.Pass()
	if err != nil || !strings.HasPrefix(again, "listen="+addr+"@") {
		t.Errorf("Pass: %q, %v", again, err)
	}
}

func TestTakeHostSideBad(t *testing.T) {
	for _, spec := range []string{"dial", "dial=2", "dial=x", "listen=127.0.0.1:1", "listen=127.0.0.1:1@999999", "other=4"} {
		if _, err := TakeHostSide(spec); err == nil {
			t.Errorf("TakeHostSide(%q) took it", spec)
		}
	}
	if hs, err := TakeHostSide(""); err != nil || len(hs.Addrs()) != 0 || hs.Dialer() != nil {
		t.Errorf("TakeHostSide(\"\"): %v", err)
	}
}
