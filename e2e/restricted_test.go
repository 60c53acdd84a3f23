package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// restrictedRow is one kind of restricted host in TestRestrictedHosts: a
// real machine in a lab namespace with exactly that restriction, joined
// to the kernel-mode m1. A new kind (rootless Docker) is one more row.
type restrictedRow struct {
	name     string // the subtest's name
	hostOpts lab.HostOptions
	docker   bool // the host gets its own Docker Engine
	// kernel: the mesh reaches the host's ports through the interface, so
	// the test service listens on the mesh address and needs no --expose.
	kernel bool
	// start runs `uncloud <args>` on h as the restriction says and returns
	// the process (argv is the agent's command line, uncloud binary first).
	start func(ctx context.Context, t *testing.T, rl *restrictedLab, h *lab.Host, argv []string) *lab.Process
	// wantMode is what machine ls says of it; wantContainers starts its
	// CONTAINERS column ("yes", or "no: " and a reason that must contain
	// the missing capability).
	wantMode, wantContainers string
}

// noTUN runs argv on h with /dev/net an empty tmpfs in a mount namespace
// of the agent's own: the TUN clone device does not exist for it, as on a
// locked-down VPS, while the rest of the host (dockerd) is untouched.
func noTUN(h *lab.Host, label string, argv ...string) (*lab.Process, error) {
	return h.Start(label, "unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs none /dev/net && exec "$@"`, "sh"}, argv...)...)
}

func restrictedRows() []restrictedRow {
	return []restrictedRow{
		{
			name: "no TUN, root, Docker", docker: true, kernel: true,
			wantMode: "kernel/veth", wantContainers: "yes",
			start: func(ctx context.Context, t *testing.T, rl *restrictedLab, h *lab.Host, argv []string) *lab.Process {
				i := len(rl.hosts) - 1
				env := []string{"env", "DOCKER_HOST=" + rl.engines[i].DockerHost(),
					"UNCLOUD_SECRETS_DIR=" + filepath.Join(h.Dir, "secrets")}
				p, err := noTUN(h, "uncloud", append(env, argv...)...)
				if err != nil {
					t.Fatal(err)
				}
				return p
			},
		},
		{
			name: "no TUN, no root, no Docker", wantMode: "netstack", wantContainers: "no: the mesh runs in userspace (netstack mode): the agent lacks CAP_NET_ADMIN",
			start: func(ctx context.Context, t *testing.T, rl *restrictedLab, h *lab.Host, argv []string) *lab.Process {
				bin := forNobody(t, h, argv[0])
				p, err := noTUN(h, "uncloud", append([]string{"setpriv"}, asNobody(bin, argv[1:]...)...)...)
				if err != nil {
					t.Fatal(err)
				}
				return p
			},
		},
		{
			name: "netstack behind a NAT", hostOpts: lab.HostOptions{NAT: lab.NATEndpointIndependent},
			wantMode: "netstack", wantContainers: "no: the mesh runs in userspace (netstack mode): userspace mode was asked for",
			start: func(ctx context.Context, t *testing.T, rl *restrictedLab, h *lab.Host, argv []string) *lab.Process {
				p, err := h.Start("uncloud", argv[0], append(argv[1:], "--userspace")...)
				if err != nil {
					t.Fatal(err)
				}
				return p
			},
		},
		// Rootless Docker (no root, the agent in rootlesskit's namespace)
		// is one more row here.
	}
}

// restrictedLab is the shared network of TestRestrictedHosts: m1, kernel
// mode with Docker, and one machine per row.
type restrictedLab struct {
	*containerLab
}

const (
	restrictedWeb     = 8000 // HTTP on m1's mesh address
	restrictedService = 8080 // echo on each row's host, the mesh reaches it
	restrictedClosed  = 8081 // echo on each netstack row's 127.0.0.1, not exposed
)

// TestRestrictedHosts: the restricted-host matrix. One kernel-mode
// network (m1 with a Docker Engine) joined by one machine per row, each
// with exactly its restriction; for each row, mesh traffic both ways, the
// host service the mesh may reach (--expose on netstack rows) and one it
// may not, DNS and the proxies (SOCKS5, HTTP GET and CONNECT, by address
// and *.internal name), how machine ls reports the machine, and where the
// row runs containers, container to container with m1 by address and by
// <service>.internal, both ways; where it cannot, run names what is
// missing.
func TestRestrictedHosts(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	rl := &restrictedLab{containerLab: newContainerLab(ctx, t, withDocker)}
	h1 := rl.hosts[0]
	m1 := lab.MeshAddr(1)
	if _, err := h1.StartHelper(ctx, "web", "httpserve", true, "-listen", netip.AddrPortFrom(m1, restrictedWeb).String(), "-name", "m1-web"); err != nil {
		t.Fatal(err)
	}
	rows := restrictedRows()
	tarball, err := testimage.Tarball(rl.echoBin)
	if err != nil {
		t.Fatal(err)
	}
	// All rows join first, so the network forms once for all subtests.
	for i, row := range rows {
		h := rl.lab.MustHost(t, fmt.Sprintf("rh%d", i+1), row.hostOpts)
		rl.hosts = append(rl.hosts, h)
		rl.procs = append(rl.procs, nil)
		rl.engines = append(rl.engines, nil)
		if row.docker {
			e, err := h.StartDocker(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(e.Close)
			rl.engines[len(rl.engines)-1] = e
			if _, err := h.Run(ctx, "iptables", "-w", "-P", "FORWARD", "DROP"); err != nil {
				t.Fatal(err)
			}
			if err := testimage.Import(ctx, e.Client, tarball, testimage.Tag); err != nil {
				t.Fatal(err)
			}
		}
		argv := []string{rl.lab.Uncloud, "--log-level", "debug", "join", "--name", fmt.Sprintf("m%d", i+2), "--foreground",
			"--socks5", itoa(socksPort), "--http-proxy", "3128"}
		if !row.kernel {
			argv = append(argv, "--expose", itoa(restrictedService))
		}
		p := row.start(ctx, t, rl, h, append(argv, rl.token(ctx, t, 0)))
		rl.procs[len(rl.procs)-1] = p
		upCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		_, err := p.WaitLog(upCtx, 0, "machine up")
		cancel()
		if err != nil {
			t.Fatalf("%s: agent: %v\n%s", row.name, err, p.Log())
		}
	}
	took := rl.waitAllAlive(ctx, t, 60*time.Second)
	t.Logf("m1 and %d restricted machines alive everywhere %v after the last join (%v since the start)", len(rows),
		took.Round(10*time.Millisecond), time.Since(start).Round(100*time.Millisecond))

	for i, row := range rows {
		idx := i + 1
		h, addr := rl.hosts[idx], lab.MeshAddr(idx+1)
		t.Run(row.name, func(t *testing.T) {
			rl.checkReported(ctx, t, row, fmt.Sprintf("m%d", idx+1))
			if row.docker {
				rl.waitNetwork(ctx, t, idx)
			}
			rl.checkHostService(ctx, t, row, h, addr)
			checkProxies(ctx, t, h, m1, restrictedWeb, "m1-web")
			if row.kernel {
				// A host program reaches the mesh without a proxy, and the
				// machine's resolver answers *.internal.
				curlBody(ctx, t, h, "m1-web", "--noproxy", "*", fmt.Sprintf("http://%v:%d/", m1, restrictedWeb))
				out, err := h.Run(ctx, "dig", "+short", "+time=3", "@"+addr.String(), "m1.machine.internal")
				if err != nil || strings.TrimSpace(out) != m1.String() {
					t.Errorf("dig m1.machine.internal at %v: %q, %v", addr, out, err)
				}
			}
			if row.wantContainers == "yes" {
				rl.checkContainers(ctx, t, idx)
			} else {
				rl.checkNoContainers(ctx, t, row, idx)
			}
		})
	}
	t.Logf("TestRestrictedHosts took %v", time.Since(start).Round(100*time.Millisecond))
}

// checkReported: m1's machine ls shows the row's mode and whether it runs
// containers (and why not).
func (rl *restrictedLab) checkReported(ctx context.Context, t *testing.T, row restrictedRow, name string) {
	t.Helper()
	eventuallyE2E(t, name+"'s mode and containers in m1's machine ls", 20*time.Second, func() error {
		for _, m := range rl.machines(ctx, t, 0) {
			if m.Name != name {
				continue
			}
			if m.Mode != row.wantMode || !strings.HasPrefix(m.Containers, row.wantContainers) {
				return fmt.Errorf("%s: mode %q, containers %q; want %q, %q…", name, m.Mode, m.Containers, row.wantMode, row.wantContainers)
			}
			return nil
		}
		return fmt.Errorf("m1 does not list %s", name)
	})
}

// checkHostService: m1 reaches the row's host service through the mesh
// (on a netstack row only the exposed port, forwarded to 127.0.0.1), and
// a port not exposed is refused.
func (rl *restrictedLab) checkHostService(ctx context.Context, t *testing.T, row restrictedRow, h *lab.Host, addr netip.Addr) {
	t.Helper()
	loopback := netip.MustParseAddr("127.0.0.1")
	listen := netip.AddrPortFrom(loopback, restrictedService)
	if row.kernel {
		listen = netip.AddrPortFrom(addr, restrictedService)
	}
	if _, err := h.StartEcho(ctx, "echo", listen); err != nil {
		t.Fatal(err)
	}
	target := netip.AddrPortFrom(addr, restrictedService)
	eventuallyE2E(t, fmt.Sprintf("m1 reaches %v", target), 30*time.Second, func() error {
		res, err := rl.hosts[0].Dial(ctx, target, true, lab.DialOptions{Timeout: 5 * time.Second})
		if err != nil {
			return err
		}
		if !res.Echoed {
			return fmt.Errorf("%+v", res)
		}
		return nil
	})
	if row.kernel {
		return
	}
	if _, err := h.StartEcho(ctx, "echo-closed", netip.AddrPortFrom(loopback, restrictedClosed)); err != nil {
		t.Fatal(err)
	}
	res, err := rl.hosts[0].Dial(ctx, netip.AddrPortFrom(addr, restrictedClosed), true, lab.DialOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Echoed || res.Connected || !res.Refused {
		t.Errorf("m1 → %v:%d (not exposed): %+v; want an active refusal", addr, restrictedClosed, res)
	}
}

// checkContainers: a container on the row's machine and one on m1 reach
// each other by address and by <service>.internal, with their own source
// addresses.
func (rl *restrictedLab) checkContainers(ctx context.Context, t *testing.T, idx int) {
	t.Helper()
	name := fmt.Sprintf("m%d", idx+1)
	svc := map[string]string{"m1": "kweb", name: "rweb"}
	for machine, service := range svc {
		if _, err := rl.uncloud(ctx, t, 0, "run", "--name", service, "-m", machine, "--pull", "never", "-p", "8080", testimage.Tag); err != nil {
			t.Fatalf("run %s on %s: %v", service, machine, err)
		}
	}
	k := rl.running(ctx, t, idx, "kweb", 1)[0]
	r := rl.running(ctx, t, 0, "rweb", 1)[0]
	if r.Machine != name || !netip.MustParsePrefix(fmt.Sprintf("10.210.%d.0/24", idx+1)).Contains(netip.MustParseAddr(r.Address)) {
		t.Fatalf("rweb runs on %s at %s; want %s, in its subnet", r.Machine, r.Address, name)
	}
	for _, pair := range [][2]api.ContainerInfo{{r, k}, {k, r}} {
		from, to := pair[0], pair[1]
		for _, host := range []string{to.Address, to.Service + ".internal"} {
			eventuallyE2E(t, fmt.Sprintf("%s → %s", from.Name, host), 30*time.Second, func() error {
				s, err := rl.uncloud(ctx, t, 0, "exec", "--container", from.Name, from.Service, "/echoserver", "get", "http://"+host+":8080/hello")
				if err != nil {
					return err
				}
				if want := fmt.Sprintf("host=%s addr=%s remote=%s", to.Name, to.Address, from.Address); !strings.Contains(s, want) {
					return fmt.Errorf("answered %q, want %q (no NAT inside the mesh)", s, want)
				}
				return nil
			})
		}
	}
	// The agent's memory with containers running, beside m1's (TUN) in
	// the same run.
	var rss [2]int64
	for i, p := range []*lab.Process{rl.procs[idx], rl.procs[0]} {
		if !strings.Contains(p.Log(), "machine up") {
			t.Fatalf("process %s is not the agent", p.Name)
		}
		n, err := p.RSS()
		if err != nil {
			t.Fatal(err)
		}
		rss[i] = n
	}
	t.Logf("FIGURE agent RSS with one container running: %s (veth, no TUN) %.1f MiB, m1 (TUN) %.1f MiB",
		name, float64(rss[0])/(1<<20), float64(rss[1])/(1<<20))
	logs, err := rl.uncloud(ctx, t, 0, "logs", "rweb")
	if want := "request /hello from " + k.Address; err != nil || !strings.Contains(logs, want) {
		t.Errorf("logs rweb: %v; lack %q:\n%s", err, want, logs)
	}
}

// checkNoContainers: run on the row's machine is refused with the reason
// machine ls gives (the missing capability).
func (rl *restrictedLab) checkNoContainers(ctx context.Context, t *testing.T, row restrictedRow, idx int) {
	t.Helper()
	name := fmt.Sprintf("m%d", idx+1)
	want := strings.TrimPrefix(row.wantContainers, "no: ")
	out, err := rl.uncloud(ctx, t, 0, "run", "--name", "x"+name, "-m", name, testimage.Tag)
	if err == nil || !strings.Contains(err.Error()+out, want) {
		t.Errorf("run -m %s: %v\n%s; want a refusal with %q", name, err, out, want)
	}
}
