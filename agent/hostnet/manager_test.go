package hostnet

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/tun"
)

// hostDevice stands in for the mesh device: it records the exposed ports
// it is given and dials through the host (a kernel-mode device does just
// that). The real device's side is tun's TestNetstackSetExposed and the
// e2e test TestNetstackSettings.
type hostDevice struct {
	mode    tun.Mode
	mu      sync.Mutex
	exposed []tun.ExposedPort
}

func (d *hostDevice) Mode() tun.Mode { return d.mode }

func (d *hostDevice) SetExposed(p []tun.ExposedPort) error {
	if d.mode != tun.ModeNetstack {
		return tun.ErrKernelMode
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.exposed = slices.Clone(p)
	return nil
}

func (d *hostDevice) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var dl net.Dialer
	return dl.DialContext(ctx, network, address)
}

func (d *hostDevice) get() []tun.ExposedPort {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.exposed
}

// freePort is a loopback address nothing listens on (now).
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestManager(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	socks, socks2, httpAddr := freePort(t), freePort(t), freePort(t)
	reserved := ports(t, "53/udp")

	m, err := Open(dir, Change{AddExpose: ports(t, "8080"), SOCKS5: &socks}, reserved, log)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := Load(dir); s.SOCKS5 != "" {
		t.Fatalf("start flags saved before the start: %+v", s)
	}
	dev := &hostDevice{mode: tun.ModeNetstack}
	var changes []Settings
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	m.Start(ctx, Runtime{Device: dev, OnChange: func(s Settings) { changes = append(changes, s) }})
	defer m.Close()
	if s, _ := Load(dir); s.SOCKS5 != socks || len(s.Expose) != 1 {
		t.Fatalf("start flags not saved by Start: %+v", s)
	}
	if !listening(socks) || !m.Status().SOCKS5.Serving {
		t.Fatalf("SOCKS5 not serving on %s: %+v", socks, m.Status())
	}

	t.Run("expose add reaches the device and the file", func(t *testing.T) {
		s, err := m.Update(ctx, Change{AddExpose: ports(t, "5353/udp")})
		if err != nil {
			t.Fatal(err)
		}
		want := ports(t, "5353/udp", "8080")
		if !reflect.DeepEqual(dev.get(), want) || !reflect.DeepEqual(s.Expose, want) {
			t.Fatalf("device has %v, settings %v; want %v", dev.get(), s.Expose, want)
		}
		if stored, _ := Load(dir); !reflect.DeepEqual(stored.Expose, want) {
			t.Fatalf("file has %v", stored.Expose)
		}
		if len(changes) != 1 {
			t.Fatalf("OnChange called %d times, want 1", len(changes))
		}
	})
	t.Run("a refused change changes nothing", func(t *testing.T) {
		for _, c := range []Change{
			{AddExpose: ports(t, "53/udp")},
			{RemoveExpose: ports(t, "9999")},
		} {
			if _, err := m.Update(ctx, c); err == nil {
				t.Fatalf("%+v accepted", c)
			}
		}
		if len(dev.get()) != 2 || len(changes) != 1 {
			t.Fatalf("device %v, %d changes after refusals", dev.get(), len(changes))
		}
	})
	t.Run("proxy moved: the old address closes, the new one serves", func(t *testing.T) {
		if _, err := m.Update(ctx, Change{SOCKS5: &socks2, HTTPProxy: &httpAddr}); err != nil {
			t.Fatal(err)
		}
		if listening(socks) || !listening(socks2) || !listening(httpAddr) {
			t.Fatalf("after the move: old %v new %v http %v", listening(socks), listening(socks2), listening(httpAddr))
		}
		st := m.Status()
		if st.SOCKS5.Listen != socks2 || !st.SOCKS5.Serving || !st.HTTPProxy.Serving {
			t.Fatalf("status %+v", st)
		}
	})
	t.Run("a move to a taken port is undone", func(t *testing.T) {
		taken, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		addr := taken.Addr().String()
		_, err = m.Update(ctx, Change{HTTPProxy: &addr, AddExpose: ports(t, "9090")})
		if !errors.Is(err, api.ErrConflict) {
			t.Fatalf("error %v, want a conflict", err)
		}
		if !listening(httpAddr) || m.Status().HTTPProxy.Listen != httpAddr {
			t.Fatalf("the HTTP proxy was not put back on %s: %+v", httpAddr, m.Status())
		}
		if slices.Contains(dev.get(), tun.ExposedPort{Port: 9090, Proto: "tcp"}) {
			t.Fatalf("the exposed port of a failed change stayed on the device: %v", dev.get())
		}
		if stored, _ := Load(dir); stored.HTTPProxy != httpAddr {
			t.Fatalf("file has %+v", stored)
		}
	})
	t.Run("off", func(t *testing.T) {
		off := ""
		if _, err := m.Update(ctx, Change{HTTPProxy: &off}); err != nil {
			t.Fatal(err)
		}
		if listening(httpAddr) || m.Status().HTTPProxy.Listen != "" {
			t.Fatalf("HTTP proxy still on: %+v", m.Status())
		}
	})
	m.Close()
	if listening(socks2) {
		t.Fatal("SOCKS5 still serving after Close")
	}

	t.Run("a restart without flags keeps everything, flags merge", func(t *testing.T) {
		m2, err := Open(dir, Change{}, reserved, log)
		if err != nil {
			t.Fatal(err)
		}
		want := Settings{Expose: ports(t, "5353/udp", "8080"), SOCKS5: socks2}
		if got := m2.Settings(); !reflect.DeepEqual(got, want) {
			t.Fatalf("after a restart %+v, want %+v", got, want)
		}
		off := "off"
		p, _ := ParseListenFlag("--socks5", off)
		m3, err := Open(dir, Change{AddExpose: ports(t, "22"), SOCKS5: p}, reserved, log)
		if err != nil {
			t.Fatal(err)
		}
		m3.Start(ctx, Runtime{Device: &hostDevice{mode: tun.ModeNetstack}})
		m3.Close()
		want = Settings{Expose: ports(t, "22", "5353/udp", "8080")}
		if got := m3.Settings(); !reflect.DeepEqual(got, want) {
			t.Fatalf("after a restart with --expose 22 --socks5 off: %+v, want %+v", got, want)
		}
		if got, _ := Load(dir); !reflect.DeepEqual(got, want) {
			t.Fatalf("stored after that restart: %+v, want %+v", got, want)
		}
	})
	t.Run("kernel mode: exposing is refused, proxies serve", func(t *testing.T) {
		kdir := t.TempDir()
		addr := freePort(t)
		k, err := Open(kdir, Change{SOCKS5: &addr}, reserved, log)
		if err != nil {
			t.Fatal(err)
		}
		k.Start(ctx, Runtime{Device: &hostDevice{mode: tun.ModeKernel}})
		defer k.Close()
		if !listening(addr) {
			t.Fatal("SOCKS5 not serving in kernel mode")
		}
		_, err = k.Update(ctx, Change{AddExpose: ports(t, "8080")})
		if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "kernel mode") {
			t.Fatalf("expose in kernel mode: %v, want a conflict naming kernel mode", err)
		}
		if s, _ := Load(kdir); len(s.Expose) != 0 {
			t.Fatalf("refused expose saved: %+v", s)
		}
	})
}

// TestManagerRootless: with a Forwarder, a Listen and FixedProxies (what
// a rootless agent gives), the exposed ports go to the forwarder at start
// and at runtime, the proxies listen only through Listen, and moving a
// proxy is refused with the reason, nothing changed or saved.
func TestManagerRootless(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	socks, other := freePort(t), freePort(t)
	m, err := Open(dir, Change{AddExpose: ports(t, "8080"), SOCKS5: &socks}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fw := &hostDevice{mode: tun.ModeNetstack} // records what it is given
	var asked []string
	fixed := errors.New("restart the agent")
	m.Start(ctx, Runtime{
		Device:  &hostDevice{mode: tun.ModeKernel},
		Forward: fw,
		Listen: func(addr string) (net.Listener, error) {
			asked = append(asked, addr)
			return net.Listen("tcp", addr)
		},
		FixedProxies: fixed,
	})
	defer m.Close()
	if got := fw.get(); !reflect.DeepEqual(got, ports(t, "8080")) {
		t.Errorf("forwarder at start: %v", got)
	}
	if !slices.Equal(asked, []string{socks}) || !listening(socks) {
		t.Errorf("proxy listens through Listen: asked %v, listening %v", asked, listening(socks))
	}
	st := m.Status()
	if !st.Forwarding || !st.SOCKS5.Serving {
		t.Errorf("status: %+v", st)
	}
	if _, err := m.Update(ctx, Change{AddExpose: ports(t, "9090")}); err != nil {
		t.Fatal(err)
	}
	if got := fw.get(); !reflect.DeepEqual(got, ports(t, "8080", "9090")) {
		t.Errorf("forwarder after expose add: %v", got)
	}
	for _, c := range []Change{{SOCKS5: &other}, {HTTPProxy: &other}, {SOCKS5: ptr("")}} {
		_, err := m.Update(ctx, c)
		if !errors.Is(err, fixed) || !errors.Is(err, api.ErrConflict) {
			t.Errorf("moving a proxy in rootless mode: %v, want the fixed reason as a conflict", err)
		}
	}
	if s, _ := Load(dir); s.SOCKS5 != socks || s.HTTPProxy != "" {
		t.Errorf("saved after a refused move: %+v", s)
	}
	if _, err := m.Update(ctx, Change{SOCKS5: &socks}); err != nil {
		t.Errorf("naming the same address again: %v", err)
	}
}
