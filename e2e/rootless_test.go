package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
	"github.com/uncloud-mesh/uncloud/tun"
)

const (
	rootlessWeb     = 8000 // HTTP on m1's mesh address, for m2's proxies
	rootlessExposed = 8080 // echo on h2's 127.0.0.1, exposed by m2
	rootlessClosed  = 8081 // echo on h2's 127.0.0.1, not exposed
)

// TestRootlessDocker: a kernel machine m1 with its own Docker Engine, and
// m2 where an unprivileged user runs Debian's rootless Docker
// (dockerd-rootless.sh: rootlesskit, slirp4netns, newuidmap) and joins as
// that user. Its agent enters the engine's namespaces and runs the mesh
// on a kernel TUN there, behind slirp4netns's NAT. Checked: the refusal
// while the user has no subordinate ids, mode rootless with containers
// yes in machine ls, mesh traffic both ways, and containers of the two
// machines reaching each other by address (their own, no NAT) and by
// <service>.internal; host programs on h2 reaching the mesh through the
// proxies on h2's loopback, and m1 reaching a service on h2's 127.0.0.1
// through the exposed port (and not through one not exposed).
func TestRootlessDocker(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, useradd, dockerd); CI runs as root")
	}
	for _, tool := range []string{"dockerd", "rootlesskit", "slirp4netns", "newuidmap", "setpriv", lab.RootlessDockerScript} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s (scripts/test installs docker.io, rootlesskit, slirp4netns, uidmap): %v", tool, err)
		}
	}
	ctx := context.Background()
	l := lab.Start(t)
	hosts, err := l.AddHosts(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	c := &containerLab{formed: &formed{lab: l, hosts: hosts, procs: make([]*lab.Process, 2)}}
	tarball := c.buildEchoImage(ctx, t)
	e1, err := hosts[0].StartDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e1.Close)
	c.engines = []*lab.Docker{e1, nil}
	if _, err := hosts[0].Run(ctx, "iptables", "-w", "-P", "FORWARD", "DROP"); err != nil {
		t.Fatal(err)
	}
	if err := testimage.Import(ctx, e1.Client, tarball, testimage.Tag); err != nil {
		t.Fatal(err)
	}
	c.startAgentWithDocker(ctx, t, 0, "init", "--name", "m1", "--foreground")

	// m2's user: the lab mounts h2's own lib and run dirs at the default
	// /var/lib/uncloud and /run/uncloud, which the user must own.
	u, err := l.NewUser(t)
	if err != nil {
		t.Fatal(err)
	}
	h := hosts[1]
	for _, d := range []string{"lib", "run"} {
		if err := os.Chown(h.Dir+"/"+d, u.UID, u.GID); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(h.Dir, 0o755)

	if !t.Run("refused, naming what is missing: no subordinate ids", func(t *testing.T) {
		out, err := h.RunAs(ctx, u, u.Bin, "agent", "--rootless")
		if err == nil {
			t.Fatalf("agent --rootless without subordinate ids started:\n%s", out)
		}
		for _, want := range []string{"no subordinate range for user " + u.Name + " in /etc/subuid", "/etc/subgid"} {
			if !strings.Contains(out, want) {
				t.Errorf("refusal lacks %q:\n%s", want, out)
			}
		}
	}) {
		return
	}

	if err := u.AddSubIDs(); err != nil {
		t.Fatal(err)
	}
	engineStart := time.Now()
	rd, err := h.StartRootlessDocker(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rd.Close)
	t.Logf("rootless dockerd answered after %v", time.Since(engineStart).Round(time.Millisecond))
	if err := testimage.Import(ctx, rd.Client, tarball, testimage.Tag); err != nil {
		t.Fatalf("load the test image into the rootless engine: %v", err)
	}

	tok := c.token(ctx, t, 0)
	// The proxies on the host's loopback: the starter opens them before
	// entering the namespace.
	p, err := h.StartAs(u, "uncloud", nil, u.Bin, "--log-level", "debug", "join", "--name", "m2", "--foreground",
		"--socks5", itoa(socksPort), "--http-proxy", "3128", tok)
	if err != nil {
		t.Fatal(err)
	}
	c.procs[1] = p
	upCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := p.WaitLog(upCtx, 0, "containers can run here"); err != nil {
		t.Fatalf("rootless agent: %v\n%s", err, p.Log())
	}
	for _, want := range []string{"entering the rootless Docker's namespaces", "mode=rootless"} {
		if !strings.Contains(p.Log(), want) {
			t.Fatalf("rootless agent's log lacks %q:\n%s", want, p.Log())
		}
	}
	c.waitAllAlive(ctx, t, 60*time.Second)
	c.waitNetwork(ctx, t, 0)

	if !t.Run("machine ls: m2 rootless, containers yes, on both machines", func(t *testing.T) {
		for i := range hosts {
			eventuallyE2E(t, "m2 rootless with containers in machine ls on "+hosts[i].Name, 30*time.Second, func() error {
				for _, m := range c.machines(ctx, t, i) {
					if m.Name == "m2" {
						if m.Mode != "rootless" || m.Containers != "yes" {
							return fmt.Errorf("m2: mode %q, containers %q", m.Mode, m.Containers)
						}
						return nil
					}
				}
				return fmt.Errorf("m2 not listed")
			})
		}
		out, err := c.uncloud(ctx, t, 1, "status")
		if err != nil || !strings.Contains(out, "rootless mode") {
			t.Errorf("status on m2: %v\n%s", err, out)
		}
	}) {
		return
	}

	if !t.Run("mesh traffic both ways", func(t *testing.T) {
		// m1's host to m2's machine address (in the rootless namespace),
		// and m2's agent, from inside, to m1's.
		if err := pingOnce(ctx, hosts[0], "10.210.2.1"); err != nil {
			t.Errorf("m1 -> m2: %v", err)
		}
		st := c.status(ctx, t, 1)
		if len(st.Peers) != 1 || st.Peers[0].LastHandshake.IsZero() || st.Peers[0].RxBytes == 0 || st.Peers[0].TxBytes == 0 {
			t.Errorf("m2's peer m1: %+v", st.Peers)
		}
	}) {
		return
	}

	if !t.Run("m1 sees m2's WireGuard at the host's address and port, not slirp4netns's", func(t *testing.T) {
		// The starter bound the port on h2's network before entering the
		// namespace; behind slirp4netns m1 saw h2's address with an
		// ephemeral port of slirp's.
		want := netip.AddrPortFrom(h.Addr, tun.DefaultListenPort).String()
		eventuallyE2E(t, "m2's endpoint on m1", 30*time.Second, func() error {
			for _, p := range c.status(ctx, t, 0).Peers {
				if p.Machine == "m2" {
					if p.Endpoint != want {
						return fmt.Errorf("m2's endpoint on m1 is %q, want %s", p.Endpoint, want)
					}
					return nil
				}
			}
			return fmt.Errorf("m2 not among m1's peers")
		})
		if !strings.Contains(p.Log(), "WireGuard socket bound on the host's network") {
			t.Errorf("the starter's log does not say it bound the host's socket:\n%s", p.Log())
		}
	}) {
		return
	}

	var a, b api.ContainerInfo // on m1 and on m2
	if !t.Run("containers on both reach each other by address and by name", func(t *testing.T) {
		for _, s := range []struct{ name, machine string }{{"aa", "m1"}, {"bb", "m2"}} {
			if out, err := c.uncloud(ctx, t, 0, "run", "--name", s.name, "-m", s.machine, "-p", "8080", "--pull", "never", testimage.Tag); err != nil {
				t.Fatalf("run %s on %s: %v\n%s", s.name, s.machine, err, out)
			}
		}
		a, b = c.running(ctx, t, 0, "aa", 1)[0], c.running(ctx, t, 0, "bb", 1)[0]
		if b.Machine != "m2" || !strings.HasPrefix(b.Address, "10.210.2.") {
			t.Fatalf("bb: %+v, want on m2 in 10.210.2.0/24", b)
		}
		for _, pair := range []struct {
			from, to api.ContainerInfo
			service  string
		}{{a, b, "aa"}, {b, a, "bb"}} {
			for _, target := range []string{pair.to.Address, pair.to.Service + ".internal"} {
				eventuallyE2E(t, pair.from.Name+" -> "+target, 30*time.Second, func() error {
					s, err := c.uncloud(ctx, t, 0, "exec", "--container", pair.from.Name, pair.service, "/echoserver", "get", "http://"+target+":8080/x")
					if err != nil {
						return fmt.Errorf("%v: %s", err, s)
					}
					want := fmt.Sprintf("host=%s addr=%s remote=%s", pair.to.Name, pair.to.Address, pair.from.Address)
					if !strings.Contains(s, want) {
						t.Fatalf("%s -> %s answered %q, want %q (no NAT inside the mesh)", pair.from.Name, target, s, want)
					}
					return nil
				})
			}
		}
		logs, err := c.uncloud(ctx, t, 0, "logs", "bb")
		if err != nil || !strings.Contains(logs, "request /x from "+a.Address) {
			t.Errorf("logs of bb (on m2) from m1: %v\n%s", err, logs)
		}
		// The figure the README quotes: each agent's RSS with a container
		// (the rootless one is the same process: nsenter execs in place).
		for i, proc := range c.procs {
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", proc.Pid()))
			for _, line := range strings.Split(string(status), "\n") {
				if strings.HasPrefix(line, "VmRSS:") {
					t.Logf("%s agent RSS: %s", hosts[i].Name, strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")))
				}
			}
		}
	}) {
		return
	}

	if !t.Run("host programs reach the mesh through the proxies on the host's loopback", func(t *testing.T) {
		// A web server on m1's mesh address; curl on h2's host (not in
		// the rootless namespace) through m2's SOCKS5 and HTTP proxies,
		// by address and by *.internal name, and to container aa.
		m1 := lab.MeshAddr(1)
		if _, err := hosts[0].StartHelper(ctx, "web", "httpserve", true, "-listen", netip.AddrPortFrom(m1, rootlessWeb).String(), "-name", "m1-web"); err != nil {
			t.Fatal(err)
		}
		checkProxies(ctx, t, h, m1, rootlessWeb, "m1-web")
		target := fmt.Sprintf("http://%s:8080/p", a.Address)
		for _, via := range [][]string{{"--socks5-hostname", fmt.Sprintf("127.0.0.1:%d", socksPort)}, {"-x", "http://127.0.0.1:3128"}} {
			out, err := curlHost(ctx, h, append(via, "--fail", target)...)
			if err != nil || !strings.Contains(out, "host="+a.Name) {
				t.Errorf("curl %v %s on h2: %v\n%s", via, target, err, out)
			}
		}
		out, err := c.uncloud(ctx, t, 1, "proxy", "set", "--socks5", "1081")
		if err == nil || !strings.Contains(err.Error()+out, "restart the agent") {
			t.Errorf("proxy set on the rootless machine: %v, want a refusal saying to restart the agent:\n%s", err, out)
		}
	}) {
		return
	}

	if !t.Run("an exposed port reaches the host's 127.0.0.1; one not exposed is refused", func(t *testing.T) {
		if pids := hostSideHelpers(u.Bin); len(pids) != 1 {
			t.Errorf("agent-hostside helpers running: %v, want one", pids)
		}
		loopback := netip.MustParseAddr("127.0.0.1")
		for _, port := range []uint16{rootlessExposed, rootlessClosed} {
			if _, err := h.StartEcho(ctx, fmt.Sprintf("echo-%d", port), netip.AddrPortFrom(loopback, port)); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := c.uncloud(ctx, t, 1, "expose", "add", itoa(rootlessExposed)); err != nil {
			t.Fatalf("expose add on m2: %v\n%s", err, out)
		}
		m2 := lab.MeshAddr(2)
		eventuallyE2E(t, "m1 reaches m2's exposed host port", 30*time.Second, func() error {
			res, err := hosts[0].Dial(ctx, netip.AddrPortFrom(m2, rootlessExposed), true, lab.DialOptions{Timeout: 5 * time.Second})
			if err != nil {
				return err
			}
			if !res.Echoed {
				return fmt.Errorf("%+v", res)
			}
			return nil
		})
		res, err := hosts[0].Dial(ctx, netip.AddrPortFrom(m2, rootlessClosed), true, lab.DialOptions{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if res.Echoed || res.Connected || !res.Refused {
			t.Errorf("m1 -> %v:%d (listening on h2's loopback, not exposed): %+v; want an active refusal", m2, rootlessClosed, res)
		}
		// UDP: an echo on h2's loopback (outside the namespace, as the
		// TCP one) answers m1's datagram to m2's mesh address, from the
		// helper's socket on the host's 127.0.0.1.
		if _, err := h.StartUDPEcho(ctx, "udpecho-5353", netip.AddrPortFrom(loopback, 5353)); err != nil {
			t.Fatal(err)
		}
		if out, err := c.uncloud(ctx, t, 1, "expose", "add", "5353/udp"); err != nil {
			t.Fatalf("expose add 5353/udp on m2: %v\n%s", err, out)
		}
		udpTarget := netip.AddrPortFrom(m2, 5353)
		eventuallyE2E(t, "m1 reaches m2's exposed host UDP port", 30*time.Second, func() error {
			res, err := hosts[0].ProbeUDP(ctx, []netip.AddrPort{udpTarget}, 5*time.Second)
			if err != nil {
				return err
			}
			if seen := res.Observed[udpTarget.String()]; !strings.HasPrefix(seen, "127.0.0.1:") {
				return fmt.Errorf("the echo saw the sender as %q, want the host's 127.0.0.1: %+v", seen, res)
			}
			return nil
		})
		if ls, err := c.uncloud(ctx, t, 1, "expose", "ls"); err != nil || !strings.Contains(ls, "5353") || !strings.Contains(ls, itoa(rootlessExposed)) {
			t.Errorf("expose ls after adding 5353/udp: %v\n%s", err, ls)
		}
	}) {
		return
	}

	if !t.Run("install --user writes the user unit; uninstall --user removes the agent and all it made", func(t *testing.T) {
		out, err := h.RunAs(ctx, u, u.Bin, "install", "--user", "--no-start")
		if err != nil || !strings.Contains(out, "rootless Docker runs") {
			t.Fatalf("install --user: %v\n%s", err, out)
		}
		unitPath := filepath.Join(u.Home, ".config/systemd/user/uncloud.service")
		unit, err := os.ReadFile(unitPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"ExecStart=" + u.Bin + " agent --data-dir /var/lib/uncloud --rootless\n", "PartOf=docker.service\n", "WantedBy=default.target\n"} {
			if !strings.Contains(string(unit), want) {
				t.Errorf("user unit lacks %q:\n%s", want, unit)
			}
		}
		if !strings.Contains(out, "No systemd user manager") && !strings.Contains(out, "Ran systemctl --user enable") {
			t.Errorf("install --user neither enabled the unit nor said how:\n%s", out)
		}
		// Inside the engine's network namespace, as root outside it sees.
		raw, err := os.ReadFile(filepath.Join(u.RuntimeDir(), "docker.pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid := strings.TrimSpace(string(raw))
		inNS := func(args ...string) string {
			got, err := exec.CommandContext(ctx, "nsenter", append([]string{"-t", pid, "-n"}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("%v in the rootless namespace: %v\n%s", args, err, got)
			}
			return string(got)
		}
		checks := [][]string{{"iptables", "-w", "-S"}, {"iptables", "-w", "-t", "raw", "-S"}, {"ip", "route", "show", "table", "all"}}
		for _, check := range checks {
			if got := inNS(check...); !strings.Contains(got, "UNCLOUD") && !strings.Contains(got, "10.210.") {
				t.Fatalf("%v in the rootless namespace shows nothing of the agent before uninstall:\n%s", check, got)
			}
		}
		out, err = h.RunAs(ctx, u, u.Bin, "uninstall", "--user", "--yes")
		if err != nil {
			t.Fatalf("uninstall --user: %v\n%s", err, out)
		}
		t.Logf("uninstall --user:\n%s", out)
		waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := p.Wait(waitCtx); err != nil && p.Alive() {
			t.Fatalf("agent still runs after uninstall --user: %v\n%s", err, out)
		}
		// The host-side helper outlives the agent only until its end of
		// the socketpair closes.
		eventuallyE2E(t, "the host-side helper exits with the agent", 10*time.Second, func() error {
			if pids := hostSideHelpers(u.Bin); len(pids) > 0 {
				return fmt.Errorf("agent-hostside still runs: pids %v", pids)
			}
			return nil
		})
		if _, err := os.Stat(unitPath); err == nil {
			t.Errorf("%s is still there:\n%s", unitPath, out)
		}
		if cs, err := rd.Client.ContainerList(ctx, container.ListOptions{All: true}); err != nil || len(cs) != 0 {
			t.Errorf("rootless engine still has containers %v (%v):\n%s", cs, err, out)
		}
		if _, err := rd.Client.NetworkInspect(ctx, "uncloud", network.InspectOptions{}); err == nil {
			t.Errorf("rootless engine still has the uncloud network:\n%s", out)
		}
		for _, check := range checks {
			if got := inNS(check...); strings.Contains(got, "UNCLOUD") || strings.Contains(got, "10.210.") {
				t.Errorf("%v in the rootless namespace after uninstall --user:\n%s\nuninstall said:\n%s", check, got, out)
			}
		}
	}) {
		return
	}
}

// hostSideHelpers are the pids of bin's `agent-hostside` processes.
func hostSideHelpers(bin string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		argv := strings.Split(string(raw), "\x00")
		if err == nil && len(argv) > 1 && argv[0] == bin && argv[1] == "agent-hostside" {
			out = append(out, pid)
		}
	}
	return out
}
