package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// containerLab is a formed network whose hosts each have their own engine.
type containerLab struct {
	*formed
	engines []*lab.Docker
	echoBin string
	// bins are the hosts' own copies of the uncloud binary, when the
	// shape asks for them (agents that replace their binary); nil: all
	// run the lab's.
	bins []string
}

func (c *containerLab) startAgentWithDocker(ctx context.Context, t *testing.T, i int, args ...string) {
	t.Helper()
	// A host without an engine points at a socket nobody serves.
	dockerHost := "unix://" + filepath.Join(c.hosts[i].Dir, "no-docker.sock")
	if c.engines[i] != nil {
		dockerHost = c.engines[i].DockerHost()
	}
	// Secrets and configs are bind-mounted from a path the host's dockerd
	// sees too (it does not share the agent's private /run/uncloud).
	bin := c.lab.Uncloud
	if c.bins != nil {
		bin = c.bins[i]
	}
	argv := append([]string{"DOCKER_HOST=" + dockerHost, "UNCLOUD_SECRETS_DIR=" + filepath.Join(c.hosts[i].Dir, "secrets"),
		bin, "--log-level", "debug"}, args...)
	p, err := c.hosts[i].Start("uncloud", "env", argv...)
	if err != nil {
		t.Fatal(err)
	}
	c.procs[i] = p
	upCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := p.WaitLog(upCtx, 0, "machine up"); err != nil {
		t.Fatalf("agent on %s: %v\n%s", c.hosts[i].Name, err, p.Log())
	}
}

// hostKind says what a lab host of a containerLab has.
type hostKind int

const (
	withDocker hostKind = iota // its own Docker Engine, kernel mode
	noDocker                   // kernel mode, no Docker Engine
	userspace                  // netstack mode, no Docker Engine
)

func newContainerLab(ctx context.Context, t *testing.T, kinds ...hostKind) *containerLab {
	t.Helper()
	return newContainerLabWith(ctx, t, labShape{}, kinds...)
}

// labShape changes how newContainerLabWith builds the network.
type labShape struct {
	// setup shapes the lab and its hosts (their links, say) before any
	// agent or engine starts on them.
	setup func(*lab.Lab, []*lab.Host) error
	// flags are more flags for host i's `uncloud init` or `uncloud join`.
	flags func(i int, h *lab.Host) []string
	// binary is the uncloud binary host i runs its agent from (its own
	// copy, which machine upgrade replaces; an older release); nil: the
	// lab's, for all.
	binary func(i int, h *lab.Host) (string, error)
	// tokenFrom is the host whose agent issues host i's join token
	// (nil: the first).
	tokenFrom func(i int) int
}

// newContainerLabWith is newContainerLab shaped by shape.
func newContainerLabWith(ctx context.Context, t *testing.T, shape labShape, kinds ...hostKind) *containerLab {
	n := len(kinds)
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, dockerd); CI runs as root")
	}
	if _, err := exec.LookPath("dockerd"); err != nil {
		t.Skip("no dockerd on this machine: install docker.io to run the container tests")
	}
	l := lab.Start(t)
	hosts, err := l.AddHosts(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	if shape.setup != nil {
		if err := shape.setup(l, hosts); err != nil {
			t.Fatal(err)
		}
	}
	c := &containerLab{formed: &formed{lab: l, hosts: hosts, procs: make([]*lab.Process, n)}}
	if shape.binary != nil {
		for i, h := range hosts {
			bin, err := shape.binary(i, h)
			if err != nil {
				t.Fatal(err)
			}
			c.bins = append(c.bins, bin)
		}
	}
	tarball := c.buildEchoImage(ctx, t)
	c.engines = make([]*lab.Docker, n)
	for i, h := range hosts {
		if kinds[i] != withDocker {
			continue
		}
		e, err := h.StartDocker(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		c.engines[i] = e
		// Docker sets FORWARD's policy to DROP when it turns forwarding on
		// itself; make it so on every host, so that only the agent's rules
		// can let mesh traffic through.
		if _, err := h.Run(ctx, "iptables", "-w", "-P", "FORWARD", "DROP"); err != nil {
			t.Fatal(err)
		}
	}
	// The test image goes into the first engine; the others get it with
	// `uncloud image push` (TestContainersAcrossMachines) or directly.
	if err := testimage.Import(ctx, c.engines[0].Client, tarball, testimage.Tag); err != nil {
		t.Fatalf("load the test image into %s's engine: %v", hosts[0].Name, err)
	}
	flags := func(i int) []string {
		if shape.flags == nil {
			return nil
		}
		return shape.flags(i, hosts[i])
	}
	c.startAgentWithDocker(ctx, t, 0, append([]string{"init", "--name", "m1", "--foreground"}, flags(0)...)...)
	for i := 1; i < n; i++ {
		from := 0
		if shape.tokenFrom != nil {
			from = shape.tokenFrom(i)
		}
		tok := c.token(ctx, t, from)
		args := append([]string{"join", "--name", fmt.Sprintf("m%d", i+1), "--foreground"}, flags(i)...)
		args = append(args, tok)
		if kinds[i] == userspace {
			args = append(args, "--userspace")
		}
		c.startAgentWithDocker(ctx, t, i, args...)
	}
	c.waitAllAlive(ctx, t, 60*time.Second)
	for i := range hosts {
		if kinds[i] == withDocker {
			c.waitNetwork(ctx, t, i)
		}
	}
	return c
}

// waitNetwork waits for the agent to have made host i's uncloud network
// and rules.
func (c *containerLab) waitNetwork(ctx context.Context, t *testing.T, i int) {
	t.Helper()
	eventuallyE2E(t, fmt.Sprintf("uncloud network on %s", c.hosts[i].Name), 60*time.Second, func() error {
		n, err := c.engines[i].Client.NetworkInspect(ctx, "uncloud", network.InspectOptions{})
		if err != nil {
			return err
		}
		want := fmt.Sprintf("10.210.%d.0/24", i+1)
		if len(n.IPAM.Config) != 1 || n.IPAM.Config[0].Subnet != want {
			return fmt.Errorf("network subnet %+v, want %s", n.IPAM.Config, want)
		}
		out, err := c.hosts[i].Run(ctx, "iptables", "-w", "-S", "DOCKER-USER")
		if err != nil || !strings.Contains(out, "-j UNCLOUD-FWD") {
			return fmt.Errorf("no jump to UNCLOUD-FWD yet: %v %s", err, out)
		}
		return nil
	})
	// The host rules come before Docker (the firewall does not wait for
	// it), so they say nothing about the runtime: wait for its first full
	// pass, after which it answers container calls.
	readyCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := c.procs[i].WaitLog(readyCtx, 0, "containers can run here"); err != nil {
		t.Fatalf("runtime of %s not ready: %v", c.hosts[i].Name, err)
	}
}

// eventuallyE2E fails the test unless f returns nil within timeout.
func eventuallyE2E(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	testkit.Eventually(t, what, timeout, f)
}

func (c *containerLab) ucJSON(ctx context.Context, t *testing.T, i int, out any, args ...string) error {
	t.Helper()
	s, err := c.uncloud(ctx, t, i, args...)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal([]byte(s), out); err != nil {
		return fmt.Errorf("%v: %w\n%s", args, err, s)
	}
	return nil
}

func (c *containerLab) ps(ctx context.Context, t *testing.T, i int) []api.ContainerInfo {
	t.Helper()
	var cs []api.ContainerInfo
	if err := c.ucJSON(ctx, t, i, &cs, "ps", "-o", "json"); err != nil {
		t.Fatalf("ps on %s: %v", c.hosts[i].Name, err)
	}
	return cs
}

// running waits until host i's ps shows want running containers of
// service, and returns them.
func (c *containerLab) running(ctx context.Context, t *testing.T, i int, service string, want int) []api.ContainerInfo {
	t.Helper()
	var got []api.ContainerInfo
	eventuallyE2E(t, fmt.Sprintf("%d running %s containers in ps on %s", want, service, c.hosts[i].Name), 60*time.Second, func() error {
		got = nil
		all := c.ps(ctx, t, i)
		for _, ci := range all {
			if ci.Service == service {
				if ci.State != "running" || ci.Address == "" {
					return fmt.Errorf("%s is %s at %q", ci.Name, ci.State, ci.Address)
				}
				got = append(got, ci)
			}
		}
		if len(got) != want {
			return fmt.Errorf("%d containers: %+v", len(got), all)
		}
		return nil
	})
	return got
}

// fromInternet fetches url from the lab's internet: what a user outside
// the network sees.
func (c *containerLab) fromInternet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", c.lab.InternetNS(), c.echoBin, "get", url).CombinedOutput()
	return string(out), err
}

func (c *containerLab) jumps(ctx context.Context, t *testing.T, i int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, table := range []string{"raw", "filter", "nat", "mangle"} {
		s, err := c.hosts[i].Run(ctx, "iptables", "-w", "-t", table, "-S")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(s, "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "-A" && strings.Contains(l, "-j UNCLOUD-") {
				out[table+" "+l]++
			}
			if strings.HasPrefix(l, "-A UNCLOUD-") {
				out[table+" "+l]++
			}
		}
	}
	return out
}

func peerBytes(ctx context.Context, t *testing.T, c *containerLab, i int) uint64 {
	t.Helper()
	var st api.Status
	if err := c.ucJSON(ctx, t, i, &st, "status", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, p := range st.Peers {
		n += p.RxBytes + p.TxBytes
	}
	return n
}

// buildEchoImage builds the echoserver test binary into c.echoBin and
// returns the image tarball made of it.
func (c *containerLab) buildEchoImage(ctx context.Context, t *testing.T) []byte {
	t.Helper()
	bin, err := testimage.BuildBinary(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c.echoBin = bin
	tarball, err := testimage.Tarball(bin)
	if err != nil {
		t.Fatal(err)
	}
	return tarball
}
