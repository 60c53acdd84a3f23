package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
)

// TestNetstackSettings: a kernel-mode network (m1) joined by two netstack
// machines with `join --userspace --expose … --socks5 … --http-proxy …`,
// m2 on the internet and m3 behind a NAT router. The settings given at
// join work at once and show in status and machine ls; the mesh reaches
// the exposed host services and nothing else; host programs (curl, a real
// client) reach the mesh through both proxies, by address and by
// *.internal name, and nothing outside it; `expose add|rm` and
// `proxy set` change things without a restart; and everything survives
// kill -9 and a start without the flags.
func TestNetstackSettings(t *testing.T) {
	ctx := t.Context()
	l := lab.Start(t)
	hosts, err := l.AddHosts(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	hosts = append(hosts, l.MustHost(t, "n1", lab.HostOptions{NAT: lab.NATEndpointIndependent}))
	f := &formed{lab: l, hosts: hosts, procs: make([]*lab.Process, len(hosts))}
	h1, h2, n1 := hosts[0], hosts[1], hosts[2]
	loopback := netip.MustParseAddr("127.0.0.1")
	m1, m2, m3 := lab.MeshAddr(1), lab.MeshAddr(2), lab.MeshAddr(3)
	const (
		web        = 8000 // HTTP on m1's mesh address
		public     = 8001 // HTTP on h1's internet address: reachable, but not the mesh
		exposed    = 8080 // echo on h2's 127.0.0.1, --expose 8080 at join
		later      = 8081 // echo on h2's 127.0.0.1, exposed at runtime
		exposedUDP = 5353 // UDP echo on h2's 127.0.0.1, --expose 5353/udp
		natExposed = 9000 // echo on n1's 127.0.0.1, --expose 9000
	)
	socks := netip.AddrPortFrom(loopback, socksPort)
	httpProxy := "http://127.0.0.1:3128"

	f.startAgent(ctx, t, 0, "init", "--name", "m1", "--foreground")
	joinArgs := func(name string, more ...string) []string {
		return append([]string{"join", "--name", name, "--foreground", "--userspace",
			"--socks5", itoa(socksPort), "--http-proxy", "3128"}, more...)
	}
	f.startAgent(ctx, t, 1, append(joinArgs("m2", "--expose", itoa(exposed), "--expose", itoa(exposedUDP)+"/udp"), f.token(ctx, t, 0))...)
	f.startAgent(ctx, t, 2, append(joinArgs("m3", "--expose", itoa(natExposed)), f.token(ctx, t, 0))...)
	took := f.waitAllAlive(ctx, t, 60*time.Second)
	t.Logf("m1 (kernel), m2 (netstack), m3 (netstack behind a NAT) alive everywhere %v after the last join", took.Round(10*time.Millisecond))

	mustStart := func(p *lab.Process, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustStart(h1.StartHelper(ctx, "web", "httpserve", true, "-listen", netip.AddrPortFrom(m1, web).String(), "-name", "m1-web"))
	mustStart(h1.StartHelper(ctx, "public", "httpserve", true, "-listen", netip.AddrPortFrom(h1.Addr, public).String(), "-name", "not-the-mesh"))
	mustStart(h2.StartEcho(ctx, "echo-exposed", netip.AddrPortFrom(loopback, exposed)))
	mustStart(h2.StartEcho(ctx, "echo-later", netip.AddrPortFrom(loopback, later)))
	mustStart(h2.StartUDPEcho(ctx, "udpecho", netip.AddrPortFrom(loopback, exposedUDP)))
	mustStart(n1.StartEcho(ctx, "echo-nat", netip.AddrPortFrom(loopback, natExposed)))

	status := func(t *testing.T, h *lab.Host) api.Status {
		t.Helper()
		out, err := h.Run(ctx, f.lab.Uncloud, "status", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var st api.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status -o json on %s: %v\n%s", h.Name, err, out)
		}
		return st
	}
	exposedOf := func(t *testing.T, i int, name string) []string {
		for _, m := range f.machines(ctx, t, i) {
			if m.Name == name {
				return m.Exposed
			}
		}
		t.Fatalf("%s does not list %s", hosts[i].Name, name)
		return nil
	}
	// echoes says whether from reaches an echo server at to (through the
	// SOCKS5 proxy when via is set): "" when it does, else what happened.
	echoes := func(from *lab.Host, to netip.AddrPort, via bool) (string, bool) {
		opts := lab.DialOptions{Timeout: 5 * time.Second}
		if via {
			opts.SOCKS5 = socks
		}
		res, err := from.Dial(ctx, to, true, opts)
		if err != nil {
			return err.Error(), false
		}
		return fmtf("%+v", res), res.Echoed
	}
	refused := func(t *testing.T, from *lab.Host, to netip.AddrPort, via bool) {
		t.Helper()
		opts := lab.DialOptions{Timeout: 5 * time.Second}
		if via {
			opts.SOCKS5 = socks
		}
		res, err := from.Dial(ctx, to, true, opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.Echoed || res.Connected || (!res.Refused && res.SOCKSCode == 0) {
			t.Errorf("%s → %v: %+v; want an active refusal", from.Name, to, res)
		}
	}
	curl := func(h *lab.Host, args ...string) (string, error) { return curlHost(ctx, h, args...) }
	// curlBody expects a 2xx answer with body want (hostnet_checks_test.go).
	curlBody := func(t *testing.T, h *lab.Host, want string, args ...string) {
		t.Helper()
		curlBody(ctx, t, h, want, args...)
	}

	if !t.Run("status and machine ls show the settings given at join", func(t *testing.T) {
		st := status(t, h2)
		hn := st.HostNet
		if hn == nil || !slices.Equal(hn.Exposed, []string{"5353/udp", "8080/tcp"}) || !hn.Forwarding ||
			hn.SOCKS5 == nil || hn.SOCKS5.Listen != "127.0.0.1:1080" || !hn.SOCKS5.Serving ||
			hn.HTTPProxy == nil || hn.HTTPProxy.Listen != "127.0.0.1:3128" || !hn.HTTPProxy.Serving {
			t.Fatalf("m2's status: %+v", hn)
		}
		if hn := status(t, h1).HostNet; hn == nil || len(hn.Exposed) != 0 || hn.SOCKS5 != nil || hn.Forwarding {
			t.Fatalf("m1's status: %+v", hn)
		}
		testkit.Eventually(t, "m1 lists the exposed ports of m2 and m3", 20*time.Second, func() error {
			if got := exposedOf(t, 0, "m2"); !slices.Equal(got, []string{"5353/udp", "8080/tcp"}) {
				return fmt.Errorf("m2: %q", got)
			}
			if got := exposedOf(t, 0, "m3"); !slices.Equal(got, []string{"9000/tcp"}) {
				return fmt.Errorf("m3: %q", got)
			}
			if got := exposedOf(t, 0, "m1"); len(got) != 0 {
				return fmt.Errorf("m1 (kernel): %q", got)
			}
			return nil
		})
		out, err := h1.Run(ctx, f.lab.Uncloud, "machine", "ls")
		if err != nil || !strings.Contains(out, "EXPOSED") || !strings.Contains(out, "5353/udp,8080") {
			t.Fatalf("machine ls: %v\n%s", err, out)
		}
		out, err = h2.Run(ctx, f.lab.Uncloud, "status")
		if err != nil || !strings.Contains(out, "SOCKS5 on 127.0.0.1:1080") || !strings.Contains(out, "HTTP proxy on 127.0.0.1:3128") {
			t.Fatalf("status: %v\n%s", err, out)
		}
		// The proxies' addresses are local: other machines do not see them.
		out, _ = h1.Run(ctx, f.lab.Uncloud, "machine", "ls", "-o", "json")
		if strings.Contains(out, "3128") || strings.Contains(out, "1080") {
			t.Fatalf("machine ls on m1 shows m2's proxy addresses:\n%s", out)
		}
	}) {
		return
	}

	if !t.Run("the mesh reaches exposed host services and nothing else", func(t *testing.T) {
		for _, c := range []struct {
			from *lab.Host
			to   netip.AddrPort
			via  bool
		}{
			{h1, netip.AddrPortFrom(m2, exposed), false},   // kernel → netstack
			{n1, netip.AddrPortFrom(m2, exposed), true},    // netstack behind NAT → netstack
			{h2, netip.AddrPortFrom(m3, natExposed), true}, // netstack → netstack behind NAT
			{h1, netip.AddrPortFrom(m3, natExposed), false},
		} {
			testkit.Eventually(t, fmtf("%s reaches %v", c.from.Name, c.to), 30*time.Second, func() error {
				if what, ok := echoes(c.from, c.to, c.via); !ok {
					return errors.New(what)
				}
				return nil
			})
		}
		refused(t, h1, netip.AddrPortFrom(m2, later), false)
		refused(t, n1, netip.AddrPortFrom(m2, later), true)
		probe, err := h1.ProbeUDP(ctx, []netip.AddrPort{netip.AddrPortFrom(m2, exposedUDP)}, 10*time.Second)
		if err != nil {
			t.Fatalf("exposed UDP port from m1: %v", err)
		}
		t.Logf("exposed UDP: the host service on m2 saw the datagram from %v", probe.Observed)
	}) {
		return
	}

	want := "m1-web"
	t.Run("host programs reach the mesh through SOCKS5, by address and by name", func(t *testing.T) {
		for _, h := range []*lab.Host{h2, n1} {
			curlBody(t, h, want, "--socks5-hostname", socks.String(), fmtf("http://%v:%d/", m1, web))
			curlBody(t, h, want, "--socks5-hostname", socks.String(), fmtf("http://m1.machine.internal:%d/", web))
		}
	})
	t.Run("host programs reach the mesh through the HTTP proxy: GET and CONNECT, by address and by name", func(t *testing.T) {
		for _, h := range []*lab.Host{h2, n1} {
			curlBody(t, h, want, "-x", httpProxy, fmtf("http://m1.machine.internal:%d/", web))
			curlBody(t, h, want, "-x", httpProxy, fmtf("http://%v:%d/", m1, web))
			curlBody(t, h, want, "-p", "-x", httpProxy, fmtf("http://m1.machine.internal:%d/", web))
			curlBody(t, h, want, "-p", "-x", httpProxy, fmtf("http://%v:%d/", m1, web))
		}
	})
	t.Run("destinations outside the mesh are refused by both proxies", func(t *testing.T) {
		outside := fmtf("http://%v:%d/", h1.Addr, public)
		// It is there: h2 reaches it without a proxy.
		curlBody(t, h2, "not-the-mesh", "--noproxy", "*", outside)
		if out, err := curl(h2, "--socks5-hostname", socks.String(), outside); err == nil || !strings.Contains(err.Error(), "(2)") {
			t.Errorf("SOCKS5 to %s: %q, %v; want reply 2 (not allowed)", outside, out, err)
		}
		if out, err := curl(h2, "--socks5-hostname", socks.String(), "http://example.com/"); err == nil || !strings.Contains(err.Error(), "(2)") {
			t.Errorf("SOCKS5 to example.com: %q, %v; want reply 2 (not allowed)", out, err)
		}
		for _, target := range []string{outside, "http://example.com/"} {
			out, err := curl(h2, "-x", httpProxy, "-w", "\n%{http_code}", target)
			if err != nil || !strings.HasSuffix(out, "\n403") || !strings.Contains(out, "refused") {
				t.Errorf("HTTP proxy GET %s: %q, %v; want 403 with the reason", target, out, err)
			}
			if out, err := curl(h2, "-p", "-x", httpProxy, target); err == nil || !strings.Contains(err.Error(), "403") {
				t.Errorf("HTTP proxy CONNECT to %s: %q, %v; want 403", target, out, err)
			}
		}
		out, err := curl(h2, "-x", httpProxy, "-w", "\n%{http_code}", "http://nobody.machine.internal/")
		if err != nil || !strings.HasSuffix(out, "\n502") {
			t.Errorf("HTTP proxy to an unknown .internal name: %q, %v; want 502", out, err)
		}
	})

	if !t.Run("expose add and rm take effect at once, without a restart", func(t *testing.T) {
		hold, err := h1.StartHold(ctx, "hold-8080", netip.AddrPortFrom(m2, exposed), 200*time.Millisecond, lab.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := hold.WaitRounds(ctx, 2); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if out, err := h2.Run(ctx, f.lab.Uncloud, "expose", "add", itoa(later)); err != nil {
			t.Fatal(err)
		} else {
			t.Logf("expose add: %s", strings.TrimSpace(out))
		}
		added := time.Since(start)
		testkit.Eventually(t, "m1 reaches the newly exposed port", 10*time.Second, func() error {
			if what, ok := echoes(h1, netip.AddrPortFrom(m2, later), false); !ok {
				return errors.New(what)
			}
			return nil
		})
		reachable := time.Since(start)

		start = time.Now()
		rmStart := start
		if _, err := h2.Run(ctx, f.lab.Uncloud, "expose", "rm", itoa(exposed)); err != nil {
			t.Fatal(err)
		}
		removed := time.Since(start)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = hold.WaitRounds(wctx, 1000)
		cancel()
		broken := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "broke") {
			t.Fatalf("the connection to the removed port: %v; want it closed", err)
		}
		refused(t, h1, netip.AddrPortFrom(m2, exposed), false)
		refused(t, n1, netip.AddrPortFrom(m2, exposed), true)
		t.Logf("FIGURE expose add returned in %v, the port answered m1 %v after the command started; expose rm returned in %v, the open connection was closed %v after it started",
			added.Round(time.Millisecond), reachable.Round(time.Millisecond), removed.Round(time.Millisecond), broken.Round(time.Millisecond))

		out, err := h2.Run(ctx, f.lab.Uncloud, "expose", "ls", "-o", "json")
		var hn api.HostNet
		if err != nil || json.Unmarshal([]byte(out), &hn) != nil || !slices.Equal(hn.Exposed, []string{"5353/udp", "8081/tcp"}) {
			t.Fatalf("expose ls: %v\n%s", err, out)
		}
		testkit.Eventually(t, "m1 lists m2's new ports", 20*time.Second, func() error {
			if got := exposedOf(t, 0, "m2"); !slices.Equal(got, []string{"5353/udp", "8081/tcp"}) {
				return fmt.Errorf("m2: %q", got)
			}
			return nil
		})
		t.Logf("FIGURE m1's machine ls showed m2's new ports by %v after expose rm started", time.Since(rmStart).Round(time.Millisecond))

		for _, c := range []struct{ args, want string }{
			{"expose rm 9999", "9999/tcp is not exposed"},
			{"expose add 53/udp", "agent's own"},
			{"expose add http", "not a port number"},
		} {
			if out, err := h2.Run(ctx, f.lab.Uncloud, strings.Fields(c.args)...); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: %q, %v; want an error with %q", c.args, out, err, c.want)
			}
		}
		if out, err := h1.Run(ctx, f.lab.Uncloud, "expose", "add", "8080"); err == nil || !strings.Contains(err.Error(), "kernel mode") {
			t.Errorf("expose add on the kernel machine: %q, %v; want a refusal naming kernel mode", out, err)
		}
	}) {
		return
	}

	if !t.Run("proxy set moves and stops a proxy without a restart", func(t *testing.T) {
		if _, err := h2.Run(ctx, f.lab.Uncloud, "proxy", "set", "--http-proxy", "3129"); err != nil {
			t.Fatal(err)
		}
		curlBody(t, h2, want, "-x", "http://127.0.0.1:3129", fmtf("http://m1.machine.internal:%d/", web))
		if out, err := curl(h2, "-x", httpProxy, fmtf("http://m1.machine.internal:%d/", web)); err == nil || !strings.Contains(err.Error(), "exit status 7") {
			t.Errorf("the old HTTP proxy address still answers: %q, %v", out, err)
		}
		if out, err := h2.Run(ctx, f.lab.Uncloud, "proxy", "set", "--http-proxy", "3129", "--socks5", "3129"); err == nil {
			t.Errorf("both proxies on one port accepted: %q", out)
		}
		out, err := h2.Run(ctx, f.lab.Uncloud, "proxy", "ls")
		if err != nil || !strings.Contains(out, "127.0.0.1:3129") || !strings.Contains(out, "serving") {
			t.Fatalf("proxy ls: %v\n%s", err, out)
		}
	}) {
		return
	}

	t.Run("the settings survive kill -9 and a start without the flags", func(t *testing.T) {
		if err := f.procs[1].Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		f.procs[1].Wait(ctx)
		b, err := os.ReadFile(filepath.Join(h2.Dir, "lib", "hostnet.json"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("m2's hostnet.json:\n%s", b)
		start := time.Now()
		f.startAgent(ctx, t, 1, "agent", "--userspace")
		hn := status(t, h2).HostNet
		if hn == nil || !slices.Equal(hn.Exposed, []string{"5353/udp", "8081/tcp"}) ||
			hn.SOCKS5 == nil || !hn.SOCKS5.Serving || hn.SOCKS5.Listen != "127.0.0.1:1080" ||
			hn.HTTPProxy == nil || !hn.HTTPProxy.Serving || hn.HTTPProxy.Listen != "127.0.0.1:3129" {
			t.Fatalf("after the restart: %+v", hn)
		}
		testkit.Eventually(t, "m1 reaches m2's exposed port after the restart", 30*time.Second, func() error {
			if what, ok := echoes(h1, netip.AddrPortFrom(m2, later), false); !ok {
				return errors.New(what)
			}
			return nil
		})
		t.Logf("FIGURE after kill -9, m2's agent restarted without flags served its exposed port to m1 %v after the start", time.Since(start).Round(time.Millisecond))
		refused(t, h1, netip.AddrPortFrom(m2, exposed), false)
		curlBody(t, h2, want, "--socks5-hostname", socks.String(), fmtf("http://m1.machine.internal:%d/", web))
		curlBody(t, h2, want, "-p", "-x", "http://127.0.0.1:3129", fmtf("http://m1.machine.internal:%d/", web))
		if out, err := curl(h2, "-x", "http://127.0.0.1:3129", "-w", "\n%{http_code}", fmtf("http://%v:%d/", h1.Addr, public)); err != nil || !strings.HasSuffix(out, "\n403") {
			t.Errorf("after the restart, a non-mesh destination: %q, %v; want 403", out, err)
		}
	})

	// The flags of `uncloud agent` on a joined machine were accepted and
	// ignored; now they are applied, and kept.
	t.Run("agent flags on a joined machine: --socks5 replaces, --expose adds", func(t *testing.T) {
		if err := f.procs[1].Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		f.procs[1].Wait(ctx)
		f.startAgent(ctx, t, 1, "agent", "--userspace", "--socks5", "1081", "--expose", itoa(exposed))
		other := netip.AddrPortFrom(loopback, 1081)
		curlBody(t, h2, want, "--socks5-hostname", other.String(), fmtf("http://m1.machine.internal:%d/", web))
		if out, err := curl(h2, "--socks5-hostname", socks.String(), fmtf("http://m1.machine.internal:%d/", web)); err == nil {
			t.Errorf("the replaced SOCKS5 address still answers: %q", out)
		}
		testkit.Eventually(t, "m1 reaches the port exposed again by the flag", 30*time.Second, func() error {
			if what, ok := echoes(h1, netip.AddrPortFrom(m2, exposed), false); !ok {
				return errors.New(what)
			}
			return nil
		})
		hn := status(t, h2).HostNet
		if hn == nil || !slices.Equal(hn.Exposed, []string{"5353/udp", "8080/tcp", "8081/tcp"}) || hn.SOCKS5 == nil || hn.SOCKS5.Listen != "127.0.0.1:1081" {
			t.Fatalf("after agent --socks5 1081 --expose 8080: %+v", hn)
		}
	})
}
