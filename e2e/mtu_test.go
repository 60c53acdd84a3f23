package e2e

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// bigBody is the body moved between containers: thousands of
// full-size segments, so a tunnel MTU that does not fit the path shows.
const bigBody = 8 << 20

// TestNewcomerSmallUplink is the bug a user hit: on a host whose uplink
// MTU is 1400, `uncloud init` (README's first command, agent in the
// background) must leave a machine that runs containers. The tunnel MTU
// is then 1276, below the 1280 the runtime used to insist on.
func TestNewcomerSmallUplink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, dockerd); CI runs as root")
	}
	if _, err := exec.LookPath("dockerd"); err != nil {
		t.Skip("no dockerd on this machine: install docker.io to run the container tests")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l := lab.Start(t)
	h := l.MustHost(t, "h1", lab.HostOptions{})
	if err := h.SetMTU(ctx, 1400); err != nil {
		t.Fatal(err)
	}
	engine, err := h.StartDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	if _, err := h.Run(ctx, "iptables", "-w", "-P", "FORWARD", "DROP"); err != nil {
		t.Fatal(err)
	}
	bin, err := testimage.BuildBinary(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tarball, err := testimage.Tarball(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := testimage.Import(ctx, engine.Client, tarball, testimage.Tag); err != nil {
		t.Fatal(err)
	}

	// README: `uncloud init`. The lab host's Docker Engine listens on its
	// own socket rather than /var/run/docker.sock, hence DOCKER_HOST.
	start := time.Now()
	out, err := h.Run(ctx, "env", "DOCKER_HOST="+engine.DockerHost(), l.Uncloud, "init")
	if m := regexp.MustCompile(`\(pid (\d+),`).FindStringSubmatch(out); m != nil {
		pid, _ := strconv.Atoi(m[1])
		t.Cleanup(func() { stopBackgroundAgent(t, pid) })
	}
	if err != nil {
		t.Fatalf("uncloud init: %v\n%s", err, out)
	}
	t.Logf("uncloud init: %v\n%s", time.Since(start).Round(time.Millisecond), out)

	want, _ := meshaddr.TunnelMTU(1400)
	if link, err := h.Run(ctx, "ip", "-o", "link", "show", "uncloud"); err != nil || !strings.Contains(link, fmt.Sprintf(" mtu %d ", want)) {
		t.Errorf("tunnel interface: %v %s, want mtu %d", err, link, want)
	}

	run := time.Now()
	var runOut string
	eventuallyE2E(t, "uncloud run on a fresh machine", 60*time.Second, func() error {
		runOut, err = h.Run(ctx, "sh", "-c", l.Uncloud+" run --name web "+testimage.Tag+" 2>&1")
		if err != nil {
			return fmt.Errorf("%w: %s", err, runOut)
		}
		return nil
	})
	t.Logf("uncloud run: %v\n%s", time.Since(run).Round(time.Millisecond), runOut)

	n, err := engine.Client.NetworkInspect(ctx, "uncloud", network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Options["com.docker.network.driver.mtu"]; got != strconv.Itoa(want) {
		t.Errorf("uncloud network MTU %q, want %d", got, want)
	}

	// The container answers, and serves a large body, from the host.
	var addr string
	eventuallyE2E(t, "a running web container in ps", 60*time.Second, func() error {
		ps, err := h.Run(ctx, l.Uncloud, "ps")
		if err != nil {
			return fmt.Errorf("%w: %s", err, ps)
		}
		m := regexp.MustCompile(`\b(10\.210\.\d+\.\d+)\b`).FindStringSubmatch(ps)
		if m == nil || !strings.Contains(ps, "running") {
			return fmt.Errorf("ps:\n%s", ps)
		}
		addr = m[1]
		return nil
	})
	eventuallyE2E(t, "the container answers", 30*time.Second, func() error {
		got, err := h.Run(ctx, bin, "get", "http://"+addr+":8080/")
		if err != nil || !strings.Contains(got, "addr="+addr) {
			return fmt.Errorf("%v: %s", err, got)
		}
		return nil
	})
	checkSum(ctx, t, h, bin, "http://"+addr+":8080", bigBody)
}

// stopBackgroundAgent ends the agent `uncloud init` started in the
// background (this test started it; pid comes from init's own output).
func stopBackgroundAgent(t *testing.T, pid int) {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := testkit.Poll(ctx, "the agent exiting", func() error {
		if syscall.Kill(pid, 0) != nil {
			return nil // gone
		}
		return errStillRunning
	}); err == nil {
		return
	}
	t.Logf("agent pid %d ignored SIGTERM for 10 s; killing it", pid)
	syscall.Kill(pid, syscall.SIGKILL)
}

// errStillRunning is a process that has not exited yet.
var errStillRunning = errors.New("still running")

// checkSum runs `echoserver sum` with argv (a host command or a container
// exec) against base/bytes?n=size and checks size and hash.
func checkSum(ctx context.Context, t *testing.T, h *lab.Host, bin, base string, size int64) {
	t.Helper()
	start := time.Now()
	out, err := h.Run(ctx, bin, "sum", fmt.Sprintf("%s/bytes?n=%d", base, size))
	if err != nil {
		t.Fatalf("%s: %v\n%s", base, err, out)
	}
	if want := wantSum(size); strings.TrimSpace(out) != want {
		t.Fatalf("%s: got %q, want %q", base, strings.TrimSpace(out), want)
	}
	t.Logf("%d MB from %s intact in %v", size>>20, base, time.Since(start).Round(time.Millisecond))
}

// wantSum is what `echoserver sum` prints for /bytes?n=size.
func wantSum(size int64) string {
	h := sha256.New()
	io.CopyN(h, rand.NewChaCha8([32]byte{}), size)
	return fmt.Sprintf("bytes=%d sha256=%x", size, h.Sum(nil))
}

// TestMTUMatrix runs containers on two machines at each underlay MTU the
// address plan supports and moves a large body between them across the
// mesh, direct and then relayed through a third machine (the direct path
// cut on the underlay). Every host's uplink has the same MTU. The
// underlay is IPv4 here; TestMTUMatrixIPv6 runs the same over IPv6.
func TestMTUMatrix(t *testing.T) {
	for _, mtu := range []int{1280, 1400, 1500, 9000} {
		t.Run(fmt.Sprintf("underlay%d", mtu), func(t *testing.T) {
			testMTU(t, mtu, false)
		})
	}
}

// TestMTUMatrixIPv6 is TestMTUMatrix over an IPv6 underlay: every host
// has an IPv6 address next to its IPv4 one, the internet drops IPv4
// between hosts, and machines publish their IPv6 address first
// (--public-ip), so the mesh can only use IPv6. A 1280 IPv6 underlay is
// the tight case of the tunnel MTU rule: a full-size relayed datagram is
// then exactly 1280 bytes (40 IPv6 + 8 UDP + 44 relay + 32 WireGuard +
// 1156 inner).
func TestMTUMatrixIPv6(t *testing.T) {
	for _, mtu := range []int{1280, 1500} {
		t.Run(fmt.Sprintf("underlay%d", mtu), func(t *testing.T) {
			testMTU(t, mtu, true)
		})
	}
}

func testMTU(t *testing.T, mtu int, ipv6 bool) {
	// A tunnel MTU that does not fit the underlay tends to hang streams
	// (the image push first) rather than fail them: bound the phase.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	shape := labShape{setup: func(l *lab.Lab, hosts []*lab.Host) error {
		for _, h := range hosts {
			if err := h.SetMTU(ctx, mtu); err != nil {
				return err
			}
			if ipv6 {
				if err := h.AddIPv6(ctx); err != nil {
					return err
				}
			}
		}
		if ipv6 {
			_, err := l.BlockIPv4(ctx)
			return err
		}
		return nil
	}}
	if ipv6 {
		shape.flags = func(_ int, h *lab.Host) []string { return []string{"--public-ip", h.PublicAddr6.String()} }
	}
	c := newContainerLabWith(ctx, t, shape, withDocker, withDocker, noDocker)
	t.Logf("network of 3 formed in %v", time.Since(start).Round(time.Millisecond))
	if ipv6 {
		// Every pair goes direct over IPv6: the only way the lab leaves
		// them. (Right after formation a path may still be probing.)
		settle := time.Now()
		for i := range c.hosts {
			for j, other := range c.hosts {
				if i == j {
					continue
				}
				peer := fmt.Sprintf("m%d", j+1)
				waitPath(ctx, t, c.formed, i, peer, "direct", 30*time.Second)
				p, err := peerPath(ctx, t, c.formed, i, peer)
				if err != nil {
					t.Fatal(err)
				}
				ep, err := netip.ParseAddrPort(p.Endpoint)
				if err != nil || ep.Addr() != other.Addr6 {
					t.Errorf("%s → %s: path %s endpoint %q, want %s's IPv6 address %v", c.hosts[i].Name, peer, p.Path, p.Endpoint, other.Name, other.Addr6)
				} else {
					t.Logf("%s → %s: %s at %v", c.hosts[i].Name, peer, p.Path, ep)
				}
			}
		}
		t.Logf("every pair direct over IPv6 %v after formation", time.Since(settle).Round(100*time.Millisecond))
	}
	want, _ := meshaddr.TunnelMTU(mtu)
	for i := range 2 {
		n, err := c.engines[i].Client.NetworkInspect(ctx, "uncloud", network.InspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := n.Options["com.docker.network.driver.mtu"]; got != strconv.Itoa(want) {
			t.Errorf("%s: uncloud network MTU %q, want %d", c.hosts[i].Name, got, want)
		}
	}
	// The image crosses the mesh too (a stream of full-size segments).
	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag, "-m", "m2"); err != nil {
		t.Fatalf("image push: %v\n%s", err, out)
	}
	if out, err := c.hosts[0].Run(ctx, "sh", "-c", c.lab.Uncloud+" run --name web --replicas 2 -m m1,m2 "+testimage.Tag+" 2>&1"); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	web := c.running(ctx, t, 0, "web", 2)
	on := map[string]string{} // machine → container name
	addrOf := map[string]string{}
	for _, ci := range web {
		on[ci.Machine], addrOf[ci.Machine] = ci.Name, ci.Address
	}
	if on["m1"] == "" || on["m2"] == "" {
		t.Fatalf("want one container on m1 and one on m2, got %+v", web)
	}
	transfer := func(from, to string) {
		t.Helper()
		t0 := time.Now()
		var out string
		eventuallyE2E(t, fmt.Sprintf("%s's container fetches %d MB from %s's", from, bigBody>>20, to), 60*time.Second, func() error {
			var err error
			out, err = c.uncloud(ctx, t, 0, "exec", "--container", on[from], "web", "/echoserver", "sum",
				fmt.Sprintf("http://%s:8080/bytes?n=%d", addrOf[to], bigBody))
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			if strings.TrimSpace(out) != wantSum(bigBody) {
				return fmt.Errorf("got %q", strings.TrimSpace(out))
			}
			return nil
		})
		t.Logf("%s ← %s: %d MB intact, %v", from, to, bigBody>>20, time.Since(t0).Round(time.Millisecond))
	}
	// On the wire: no IP fragment at all, and full-size WireGuard
	// datagrams (outer IPv4 20 + UDP 8 + WireGuard 32 + a full inner
	// packet; over IPv6 the length field leaves out the 40-byte header)
	// do cross it, so the tunnel MTU is used, not undershot.
	family, fragExpr, fullExpr := "IPv4", "ip frag-off & 0x3fff != 0", fmt.Sprintf("ip length >= %d udp dport != 0", want+60)
	if ipv6 {
		family, fragExpr, fullExpr = "IPv6", "exthdr frag exists", fmt.Sprintf("ip6 nexthdr udp ip6 length >= %d", want+40)
	}
	frags, err := c.lab.CountOnInternet(ctx, fragExpr)
	if err != nil {
		t.Fatal(err)
	}
	full, err := c.lab.CountOnInternet(ctx, fullExpr)
	if err != nil {
		t.Fatal(err)
	}
	// Over IPv6 the sizes are counted exactly too: a full direct datagram
	// (WireGuard around a full inner packet) and a full relayed one (the
	// relay header on top: the whole underlay MTU when that is at most
	// 1500), and anything longer than the underlay carries, which can
	// only be a GSO batch the bridge sees as one packet.
	type sizeCount struct {
		what string
		c    *lab.Counter
		must bool // at least one, or the test fails
	}
	var sizes []sizeCount
	if ipv6 {
		// Relayed datagrams leave the relay one by one, so those are
		// seen at their real size; direct ones mostly leave in GSO
		// batches, so their count is only logged.
		for _, sz := range []struct {
			what, expr string
			must       bool
		}{
			{fmt.Sprintf("direct full-size (%d bytes)", want+80), fmt.Sprintf("== %d", want+40), false},
			{fmt.Sprintf("relayed full-size (%d bytes)", want+80+meshaddr.RelayOverhead), fmt.Sprintf("== %d", want+40+meshaddr.RelayOverhead), true},
			{fmt.Sprintf("longer than the underlay MTU %d", mtu), fmt.Sprintf("> %d", mtu-40), false},
		} {
			c, err := c.lab.CountOnInternet(ctx, "ip6 nexthdr udp ip6 length "+sz.expr)
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, sizeCount{sz.what, c, sz.must})
		}
	}
	transfer("m1", "m2")
	transfer("m2", "m1")

	// Cut m1↔m2 on the underlay: the pair goes through m3's relay.
	block := fmt.Sprintf(`table inet mtucut {
	chain in { type filter hook input priority -10; policy accept; ip saddr %[1]s drop; }
	chain out { type filter hook output priority -10; policy accept; ip daddr %[1]s drop; }
}
`, c.hosts[1].Addr)
	if ipv6 {
		block = fmt.Sprintf(`table inet mtucut {
	chain in { type filter hook input priority -10; policy accept; ip saddr %[1]s drop; ip6 saddr %[2]s drop; }
	chain out { type filter hook output priority -10; policy accept; ip daddr %[1]s drop; ip6 daddr %[2]s drop; }
}
`, c.hosts[1].Addr, c.hosts[1].Addr6)
	}
	nft := c.hosts[0].Command(ctx, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(block)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("cut m1↔m2: %v\n%s", err, out)
	}
	cut := time.Now()
	waitPath(ctx, t, c.formed, 0, "m2", "relayed", 60*time.Second)
	waitPath(ctx, t, c.formed, 1, "m1", "relayed", 60*time.Second)
	t.Logf("m1↔m2 relayed %v after the cut", time.Since(cut).Round(100*time.Millisecond))
	if ipv6 {
		for i, peer := range []string{"m2", "m1"} {
			p, err := peerPath(ctx, t, c.formed, i, peer)
			if err != nil {
				t.Fatal(err)
			}
			ep, err := netip.ParseAddrPort(p.Endpoint)
			if err != nil || !ep.Addr().Is6() || ep.Addr().Is4In6() {
				t.Errorf("%s → %s: relayed via %q at %q, want an IPv6 endpoint", c.hosts[i].Name, peer, p.Via, p.Endpoint)
			} else {
				t.Logf("%s → %s: relayed via %s at %v", c.hosts[i].Name, peer, p.Via, ep)
			}
		}
	}
	transfer("m1", "m2")
	transfer("m2", "m1")

	nfrag, err := frags.Packets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nfull, err := full.Packets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s underlay %d, tunnel %d: %d %s fragments and %d full-size WireGuard datagrams on the wire", family, mtu, want, nfrag, family, nfull)
	for _, sz := range sizes {
		n, err := sz.c.Packets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("IPv6 UDP packets on the bridge, %s: %d", sz.what, n)
		if sz.must && n == 0 {
			t.Errorf("no IPv6 UDP packet %s crossed the underlay", sz.what)
		}
	}
	if nfrag != 0 {
		t.Errorf("%d %s fragments crossed the underlay, want 0", nfrag, family)
	}
	if nfull == 0 {
		t.Errorf("no WireGuard datagram of %d bytes or more crossed the underlay: the transfers did not use the tunnel MTU", want+60)
	}
}
