package lab_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

func TestHostsReachEachOtherOverTheInternet(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	hosts, err := l.AddHosts(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := hosts[0], hosts[1]
	if h1.Addr == h2.Addr || !lab.InternetPrefix.Contains(h1.Addr) {
		t.Fatalf("addresses %v and %v: want two distinct ones in %v", h1.Addr, h2.Addr, lab.InternetPrefix)
	}

	ping, err := h1.Ping(ctx, h2.Addr, 3, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ping.Received != 3 {
		t.Fatalf("ping %s from %s: %+v, want 3 replies", h2.Addr, h1.Name, ping)
	}

	sink, err := h2.StartSink(ctx, "sink", netip.AddrPortFrom(h2.Addr, 5201), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	const size = 10 << 20
	sent, err := h1.Send(ctx, sink.Addr, size, 7, lab.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := sink.Result(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sent.Bytes != size || got.Bytes != size || got.SHA256 != sent.SHA256 {
		t.Fatalf("sent %d bytes %s, received %d bytes %s", sent.Bytes, sent.SHA256, got.Bytes, got.SHA256)
	}
	if !strings.HasPrefix(got.Peer, h1.Addr.String()+":") {
		t.Errorf("sink saw peer %s, want %s", got.Peer, h1.Addr)
	}
	t.Logf("underlay: ping %.3f ms, %d MB at %.0f Mbit/s", ping.AvgRTTms, size>>20, got.Mbps())
}

// The lab must make a leak visible: a host's default route points at the
// internet, so a 10.210 packet with no tunnel goes out in clear text and the
// counters see it. The fail-closed test relies on exactly this.
func TestLeakIsVisibleOnTheWire(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	h := l.MustHost(t, "h1", lab.HostOptions{})
	onWire, err := l.CountOnInternet(ctx, "ip daddr 10.210.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	egress, err := h.CountEgress(ctx, "ip daddr 10.210.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*lab.Counter{onWire, egress} {
		if n, err := c.Packets(ctx); err != nil || n != 0 {
			t.Fatalf("counter before sending: %d, %v; want 0", n, err)
		}
	}
	res, err := h.SendUDP(ctx, netip.MustParseAddrPort("10.210.9.9:9"), 5)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 5 {
		t.Fatalf("send to 10.210.9.9 without a tunnel: %+v, want 5 sent (via the default route)", res)
	}
	for name, c := range map[string]*lab.Counter{"internet": onWire, "egress": egress} {
		n, err := c.Packets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n < 5 {
			t.Errorf("%s counter: %d packets, want ≥ 5", name, n)
		}
	}
}

func TestNAT(t *testing.T) {
	for _, tc := range []struct {
		kind     lab.NATKind
		samePort bool
	}{
		{lab.NATEndpointIndependent, true},
		{lab.NATSymmetric, false},
	} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			l := lab.Start(t)
			ctx := t.Context()
			s1 := l.MustHost(t, "s1", lab.HostOptions{})
			s2 := l.MustHost(t, "s2", lab.HostOptions{})
			n := l.MustHost(t, "n1", lab.HostOptions{NAT: tc.kind})
			if n.Router == nil || n.PublicAddr != n.Router.WAN || n.Addr == n.PublicAddr {
				t.Fatalf("NAT host: addr %v public %v router %+v", n.Addr, n.PublicAddr, n.Router)
			}
			var targets []netip.AddrPort
			for _, s := range []*lab.Host{s1, s2} {
				a := netip.AddrPortFrom(s.Addr, 3478)
				if _, err := s.StartUDPEcho(ctx, "udpecho", a); err != nil {
					t.Fatal(err)
				}
				targets = append(targets, a)
			}
			res, err := n.ProbeUDP(ctx, targets, 0)
			if err != nil {
				t.Fatal(err)
			}
			seen := []netip.AddrPort{}
			for _, tgt := range targets {
				ap, err := netip.ParseAddrPort(res.Observed[tgt.String()])
				if err != nil {
					t.Fatalf("observed by %v: %q: %v", tgt, res.Observed[tgt.String()], err)
				}
				if ap.Addr() != n.PublicAddr {
					t.Errorf("%v saw us as %v, want the router's WAN address %v", tgt, ap, n.PublicAddr)
				}
				seen = append(seen, ap)
			}
			if same := seen[0].Port() == seen[1].Port(); same != tc.samePort {
				t.Errorf("local %s mapped to %v and %v: same port %v, want %v", res.Local, seen[0], seen[1], same, tc.samePort)
			}
			// Unsolicited traffic from the internet must not reach the LAN.
			ping, err := s1.Ping(ctx, n.Addr, 1, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if ping.Received != 0 {
				t.Errorf("internet host reached the NATed host's private address %v", n.Addr)
			}
		})
	}
}

func TestNetem(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	if !l.NetemSupported(ctx) {
		t.Skip("skipping: this kernel has no sch_netem")
	}
	hosts, err := l.AddHosts(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := hosts[0].SetNetem(ctx, lab.Netem{Delay: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	ping, err := hosts[1].Ping(ctx, hosts[0].Addr, 3, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ping.Received == 0 || ping.MinRTTms < 38 {
		t.Fatalf("ping through 20 ms each way: %+v, want RTT ≥ 40 ms", ping)
	}
}

func TestSweepRemovesOnlyDeadRunsLeftovers(t *testing.T) {
	lab.RequireRoot(t)
	ctx := t.Context()
	// "zzzzz" in base 36 is above any pid_max: that creator is surely dead.
	dead := "ulzzzzz00-net"
	// Our own pid, with a tag that New never uses (it draws from a-z0-9
	// too, but a collision would only make this test's namespace older).
	alive := lab.NamePrefixForTest(os.Getpid(), "zz") + "-net"
	for _, ns := range []string{dead, alive} {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	swept, err := lab.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(swept, dead) || contains(swept, alive) {
		t.Fatalf("swept %v: want %s removed and %s kept", swept, dead, alive)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", dead)); !os.IsNotExist(err) {
		t.Errorf("%s still exists: %v", dead, err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", alive)); err != nil {
		t.Errorf("%s was removed: %v", alive, err)
	}
}

func TestCloseStopsProcessesAndRemovesNamespaces(t *testing.T) {
	lab.RequireRoot(t)
	ctx := t.Context()
	l, err := lab.New(ctx, lab.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	h, err := l.AddHost(ctx, "h1", lab.HostOptions{NAT: lab.NATSymmetric})
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	p, err := h.Start("sleep", "sleep", "600")
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if p.Alive() {
		t.Errorf("process %d still running after Close", p.Pid())
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), l.Prefix) {
			t.Errorf("namespace %s left after Close", e.Name())
		}
	}
	if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
		t.Errorf("lab directory %s left after Close: %v", l.Dir, err)
	}
}

func TestManyHostsAreCheap(t *testing.T) {
	l := lab.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	hosts, err := l.AddHosts(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("20 hosts in %v", took)
	if took > 30*time.Second {
		t.Errorf("20 hosts took %v; later tests need them cheap", took)
	}
	// The last host reaches the first: the bridge carries them all.
	ping, err := hosts[19].Ping(ctx, hosts[0].Addr, 1, 5*time.Second)
	if err != nil || ping.Received != 1 {
		t.Fatalf("h20 → h1: %+v, %v", ping, err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Each host has its own /etc/uncloud, /var/lib/uncloud and /run/uncloud,
// and nothing a host writes there reaches the real file system.
func TestHostsHavePrivateUncloudDirs(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	hosts, err := l.AddHosts(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range lab.PrivateDirs() {
		file := filepath.Join(dir, "lab-test-"+l.Prefix)
		for _, h := range hosts {
			if _, err := h.Run(ctx, "sh", "-c", "echo "+h.Name+" > "+file); err != nil {
				t.Fatal(err)
			}
		}
		for _, h := range hosts {
			out, err := h.Run(ctx, "cat", file)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(out) != h.Name {
				t.Errorf("%s on %s holds %q, want %q", file, h.Name, out, h.Name)
			}
		}
		if _, err := os.Stat(file); !os.IsNotExist(err) {
			os.Remove(file)
			t.Errorf("%s written inside hosts appeared on the real file system (%v)", file, err)
		}
	}
}

func TestAddHostsNumbersAddressesInOrder(t *testing.T) {
	l := lab.Start(t)
	hosts, err := l.AddHosts(t.Context(), 5)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hosts {
		want := netip.AddrFrom4([4]byte{198, 18, 1, byte(i + 1)})
		if h.Name != "h"+strconv.Itoa(i+1) || h.Addr != want {
			t.Errorf("host %d: %s at %v, want h%d at %v", i, h.Name, h.Addr, i+1, want)
		}
	}
}

func TestCustomHelperRunsInsideTheHost(t *testing.T) {
	l := lab.Start(t)
	h := l.MustHost(t, "h1", lab.HostOptions{})
	out, err := h.RunHelper(t.Context(), "addrs")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, h.Addr.String()+"/16") {
		t.Errorf("helper in %s sees addresses %q, want %v/16 among them", h.Name, out, h.Addr)
	}
	if _, err := h.RunHelper(t.Context(), "no-such-mode"); err == nil {
		t.Error("unknown helper mode: no error")
	}
}

// With AddIPv6 hosts reach each other over IPv6 too, and BlockIPv4 leaves
// IPv6 as the only way between them.
func TestIPv6Underlay(t *testing.T) {
	l := lab.Start(t)
	ctx := t.Context()
	hosts, err := l.AddHosts(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := hosts[0], hosts[1]
	for _, h := range hosts {
		if err := h.AddIPv6(ctx); err != nil {
			t.Fatal(err)
		}
		if !lab.InternetPrefix6.Contains(h.Addr6) || h.PublicAddr6 != h.Addr6 {
			t.Fatalf("%s: IPv6 address %v (public %v), want one in %v", h.Name, h.Addr6, h.PublicAddr6, lab.InternetPrefix6)
		}
	}
	if _, err := h2.StartEcho(ctx, "echo", netip.AddrPortFrom(netip.IPv6Unspecified(), 7000)); err != nil {
		t.Fatal(err)
	}
	dial := func(to netip.Addr) lab.DialResult {
		t.Helper()
		r, err := h1.Dial(ctx, netip.AddrPortFrom(to, 7000), true, lab.DialOptions{Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	frags, err := l.CountOnInternet(ctx, "exthdr frag exists")
	if err != nil {
		t.Fatal(err)
	}
	v6, err := l.CountOnInternet(ctx, "ether type ip6 tcp dport 7000")
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range []netip.Addr{h2.Addr, h2.Addr6} {
		// The first dial may race the echo server's start.
		r := dial(to)
		for deadline := time.Now().Add(10 * time.Second); !r.Echoed && time.Now().Before(deadline); r = dial(to) {
			time.Sleep(200 * time.Millisecond)
		}
		if !r.Echoed {
			t.Fatalf("%s to %s: %+v", h1.Name, to, r)
		}
	}
	if _, err := l.BlockIPv4(ctx); err != nil {
		t.Fatal(err)
	}
	if r := dial(h2.Addr); r.Connected {
		t.Errorf("IPv4 blocked, yet %s reached %s: %+v", h1.Name, h2.Addr, r)
	}
	if r := dial(h2.Addr6); !r.Echoed {
		t.Errorf("IPv4 blocked: %s did not reach %s over IPv6: %+v", h1.Name, h2.Addr6, r)
	}
	n6, err := v6.Packets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nf, err := frags.Packets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n6 == 0 || nf != 0 {
		t.Errorf("on the bridge: %d IPv6 packets to port 7000 (want some), %d IPv6 fragments (want 0)", n6, nf)
	}
}
