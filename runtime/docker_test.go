package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// These tests use the host's real Docker Engine, on a network, bridge and
// chains of their own (uncloud-t, uncloud-tbr, UNCLOUD-T-*), so they do
// not disturb an agent running on the same host.

var imageOnce struct {
	sync.Once
	err error
}

func needDocker(t *testing.T) *client.Client {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (Docker and iptables); CI runs as root")
	}
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Skipf("no Docker client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx); err != nil {
		t.Skipf("Docker Engine not reachable (%v): skipping the Docker tests", err)
	}
	imageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		imageOnce.err = testimage.Build(ctx, c)
	})
	if imageOnce.err != nil {
		t.Fatalf("test image: %v", imageOnce.err)
	}
	return c
}

type testRuntime struct {
	*Runtime
}

func newTestRuntime(t *testing.T, machineID string) *testRuntime {
	t.Helper()
	needDocker(t)
	rt, err := New(Config{MachineID: machineID, MachineName: "m-" + machineID,
		Subnet: 250, MTU: 1420, MeshInterface: "uncloud-tm",
		Network: "uncloud-t", Bridge: "uncloud-tbr", ChainTag: "T",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cleanupContainers(ctx, rt)
		_ = rt.RemoveRules(ctx)
		_ = rt.docker.NetworkRemove(ctx, "uncloud-t")
		rt.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := rt.Setup(ctx); err != nil {
		t.Fatalf("setup: %v", err)
	}
	return &testRuntime{Runtime: rt}
}

func cleanupContainers(ctx context.Context, rt *Runtime) {
	list, _ := rt.List(ctx)
	for _, c := range list {
		_ = rt.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	}
}

func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// eventually polls f until it returns nil or the time is up.
func eventually(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, timeout, err)
}

func TestDockerContainerLifecycle(t *testing.T) {
	rt := newTestRuntime(t, "lifecycle")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := rt.Create(ctx, ContainerSpec{Service: "web", Image: testimage.Tag, Ports: []string{"8080", "web.example.com:8080/https"}, Env: []string{"PORT=8080"}})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := netip.ParseAddr(c.Address)
	if err != nil || !netip.MustParsePrefix("10.210.250.0/24").Contains(addr) || addr == rt.Gateway() {
		t.Fatalf("container address %q is not a host of 10.210.250.0/24", c.Address)
	}
	if c.State != "running" || c.Service != "web" || !strings.HasPrefix(c.Name, "web-") {
		t.Fatalf("container = %+v", c)
	}
	if len(c.Ports) != 2 || c.Ports[1].Name != "web.example.com" || c.Ports[1].Port != 8080 {
		t.Fatalf("ports = %+v", c.Ports)
	}
	raw, err := rt.InspectRaw(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := raw.HostConfig.DNS; len(got) != 1 || got[0] != "10.210.250.1" {
		t.Errorf("DNS = %v, want the machine's address 10.210.250.1", got)
	}
	if raw.Config.Labels[LabelService] != "web" || raw.Config.Labels[LabelMachine] != "lifecycle" {
		t.Errorf("labels = %v", raw.Config.Labels)
	}
	// The host reaches the container on the bridge; the server answers
	// with its own name and address.
	var body string
	eventually(t, "container answers", 30*time.Second, func() error {
		body, err = httpGet(ctx, "http://"+c.Address+":8080/")
		return err
	})
	if want := fmt.Sprintf("host=%s addr=%s", c.Name, c.Address); !strings.HasPrefix(body, want) {
		t.Errorf("answer %q, want prefix %q", body, want)
	}
	// Exec runs a command inside: the container fetches from itself.
	res, err := rt.Exec(ctx, c.Name, []string{"/echoserver", "get", "http://" + c.Address + ":8080/x"})
	if err != nil || res.ExitCode != 0 || !strings.Contains(res.Stdout, "remote="+c.Address) {
		t.Errorf("exec = %+v, %v", res, err)
	}
	res, err = rt.Exec(ctx, c.Name, []string{"/echoserver", "get", "http://127.0.0.1:1/"})
	if err != nil || res.ExitCode != 1 || res.Stderr == "" {
		t.Errorf("failing exec = %+v, %v; want exit 1 with an error on stderr", res, err)
	}
	var lines []string
	if err := rt.Logs(ctx, c.ID, LogOptions{}, func(l string) error { lines = append(lines, l); return nil }); err != nil {
		t.Fatal(err)
	}
	if joined := strings.Join(lines, "\n"); !strings.Contains(joined, "listening on :8080") || !strings.Contains(joined, "request /x from "+c.Address) {
		t.Errorf("logs lack the server's lines:\n%s", joined)
	}
	if _, err := time.Parse(time.RFC3339Nano, strings.Fields(lines[0])[0]); err != nil {
		t.Errorf("log line %q does not start with a timestamp", lines[0])
	}
	if err := rt.Stop(ctx, c.Name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, _ := rt.Inspect(ctx, c.ID); got == nil || got.State != "exited" {
		t.Errorf("after stop: %+v", got)
	}
	if err := rt.Start(ctx, c.Name); err != nil {
		t.Fatal(err)
	}
	if got, _ := rt.Inspect(ctx, c.ID); got == nil || got.State != "running" || got.Address == "" {
		t.Errorf("after start: %+v", got)
	}
	if err := rt.Remove(ctx, c.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Inspect(ctx, c.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("after remove: %v, want ErrNotFound", err)
	}
}

func TestDockerBadInput(t *testing.T) {
	rt := newTestRuntime(t, "badinput")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := rt.Create(ctx, ContainerSpec{Service: "web", Image: "uncloud-test/absent:1"})
	if !errors.Is(err, ErrImageNotFound) || !strings.Contains(err.Error(), `"uncloud-test/absent:1"`) || !strings.Contains(err.Error(), "m-badinput") {
		t.Errorf("absent image: %v", err)
	}
	if _, err := rt.Create(ctx, ContainerSpec{Service: "web", Image: testimage.Tag, Ports: []string{"x:80"}}); !errors.Is(err, ErrBadSpec) {
		t.Errorf("broken port spec: %v", err)
	}
	if _, err := rt.Create(ctx, ContainerSpec{Service: "web", Name: "taken", Image: testimage.Tag}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Create(ctx, ContainerSpec{Service: "web", Name: "taken", Image: testimage.Tag}); !errors.Is(err, ErrNameTaken) {
		t.Errorf("name taken: %v", err)
	}
	if err := rt.Stop(ctx, "no-such", time.Second); !errors.Is(err, ErrNotFound) {
		t.Errorf("stop of a missing container: %v", err)
	}
	// A container uncloud did not make is not ours to touch.
	other, err := rt.docker.ContainerCreate(ctx, &container.Config{Image: testimage.Tag}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer rt.docker.ContainerRemove(context.Background(), other.ID, container.RemoveOptions{Force: true})
	if err := rt.Remove(ctx, other.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove of a foreign container: %v", err)
	}
}

func TestDockerNetworkAdoptAndConflict(t *testing.T) {
	rt := newTestRuntime(t, "network")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, err := rt.docker.NetworkInspect(ctx, "uncloud-t", network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if before.Options[optMasquerade] != "false" || before.Options[optMTU] != "1420" || before.Options[optBridgeName] != "uncloud-tbr" {
		t.Errorf("network options = %v", before.Options)
	}
	if err := rt.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := rt.docker.NetworkInspect(ctx, "uncloud-t", network.InspectOptions{})
	if err != nil || after.ID != before.ID {
		t.Errorf("second setup replaced the network: %s -> %s (%v)", before.ID, after.ID, err)
	}
	// Someone else's network under the name, on another subnet: refused,
	// not replaced.
	if _, err := rt.docker.NetworkCreate(ctx, "uncloud-t2", network.CreateOptions{Driver: "bridge",
		IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.210.249.0/24"}}}}); err != nil {
		t.Fatal(err)
	}
	defer rt.docker.NetworkRemove(context.Background(), "uncloud-t2")
	other, err := New(Config{MachineID: "network", Subnet: 248,
		Network: "uncloud-t2", Bridge: "uncloud-t2br", ChainTag: "T2", Logger: rt.log})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.Connect(ctx)
	err = other.EnsureNetwork(ctx, netip.MustParsePrefix("10.210.248.0/24"), 1420)
	if err == nil || !strings.Contains(err.Error(), `its subnet is "10.210.249.0/24", not 10.210.248.0/24`) {
		t.Errorf("conflicting network: %v", err)
	}
}

// iptablesSave is the host's rules of one table.
func iptablesSave(t *testing.T, table string) string {
	t.Helper()
	out, err := exec.Command("iptables", "-w", "-t", table, "-S").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -t %s -S: %v: %s", table, err, out)
	}
	return string(out)
}

func TestDockerFirewallIdempotent(t *testing.T) {
	rt := newTestRuntime(t, "firewall")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 3; i++ {
		if err := rt.Setup(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range rt.Rules().Chains() {
		s := iptablesSave(t, c.Table)
		jumps := 0
		for _, l := range strings.Split(s, "\n") {
			if strings.HasSuffix(l, "-j "+c.Name) {
				jumps++
			}
		}
		if jumps != 1 {
			t.Errorf("%d jumps to %s after three setups, want 1:\n%s", jumps, c.Name, s)
		}
		for _, r := range c.Rules {
			if n := strings.Count(s, "-A "+c.Name+" "); n != len(c.Rules) {
				t.Errorf("%s has %d rules, want %d", c.Name, n, len(c.Rules))
				break
			}
			_ = r
		}
	}
	if s := iptablesSave(t, "filter"); !strings.Contains(s, "-A DOCKER-USER -j UNCLOUD-T-FWD") {
		t.Errorf("no jump from DOCKER-USER:\n%s", s)
	}
	if err := rt.RemoveRules(ctx); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"raw", "filter", "nat", "mangle"} {
		if s := iptablesSave(t, table); strings.Contains(s, "UNCLOUD-T-") {
			t.Errorf("table %s still has the test chains after removal:\n%s", table, s)
		}
	}
	if s := iptablesSave(t, "filter"); !strings.Contains(s, "-A DOCKER-USER -j RETURN") {
		t.Errorf("removal took Docker's own rule:\n%s", s)
	}
}

// TestDockerWatcherReports checks that what the watcher reports, applied
// the way the agent applies it (agent/containerrecords.go), stays true to
// Docker. Keeping other machines' records apart is the agent's, tested
// there.
func TestDockerWatcherReports(t *testing.T) {
	rt := newTestRuntime(t, "watcher")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// What the observer knew before: a container that no longer exists.
	seen := newMirror(&Container{ID: "gone0000", Name: "ghost"})
	keep, err := rt.Create(ctx, ContainerSpec{Service: "api", Image: testimage.Tag, Restart: "always"})
	if err != nil {
		t.Fatal(err)
	}
	once, err := rt.Create(ctx, ContainerSpec{Service: "api", Image: testimage.Tag, Restart: "no"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); rt.Watch(wctx, seen, WatchOptions{Resync: 2 * time.Second}) }()
	eventually(t, "containers reported, stale one gone", 30*time.Second, func() error {
		for _, c := range []*Container{keep, once} {
			if r, ok := seen.get(c.ID); !ok || r.State != "running" || r.Address != c.Address {
				return fmt.Errorf("report of %s: %+v %v", c.Name, r, ok)
			}
		}
		if _, ok := seen.get("gone0000"); ok {
			return errors.New("stale container still known")
		}
		return nil
	})
	// Both crash: Docker restarts one, the other stays exited; the reports say so.
	startedAt := func(id string) string {
		c, _ := rt.InspectRaw(ctx, id)
		return c.State.StartedAt
	}
	keepStart := startedAt(keep.ID)
	for _, c := range []*Container{keep, once} {
		httpGet(ctx, "http://"+c.Address+":8080/exit")
	}
	eventually(t, "crashed containers reported", 60*time.Second, func() error {
		if r, ok := seen.get(once.ID); !ok || r.State != "exited" {
			return fmt.Errorf("report of the restart=no container: %+v %v", r, ok)
		}
		if startedAt(keep.ID) == keepStart {
			return errors.New("restart=always container not restarted yet")
		}
		if r, ok := seen.get(keep.ID); !ok || r.State != "running" {
			return fmt.Errorf("report of the restarted container: %+v %v", r, ok)
		}
		return nil
	})
	// Removed behind the agent's back: it is reported gone.
	if err := rt.docker.ContainerRemove(ctx, once.ID, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "removed container reported gone", 30*time.Second, func() error {
		if _, ok := seen.get(once.ID); ok {
			return errors.New("still known")
		}
		return nil
	})
	// The watcher stops (the agent dies); meanwhile a container goes and one
	// comes; the next watcher finds both.
	stop()
	<-done
	if err := rt.docker.ContainerRemove(ctx, keep.ID, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	fresh, err := rt.Create(ctx, ContainerSpec{Service: "api", Image: testimage.Tag})
	if err != nil {
		t.Fatal(err)
	}
	go rt.Watch(ctx, seen, WatchOptions{})
	eventually(t, "restarted watcher catches up", 30*time.Second, func() error {
		if _, ok := seen.get(keep.ID); ok {
			return errors.New("a container removed while no watcher ran is still known")
		}
		if r, ok := seen.get(fresh.ID); !ok || r.State != "running" {
			return fmt.Errorf("report of a container made while no watcher ran: %+v %v", r, ok)
		}
		return nil
	})
	if n := seen.len(); n != 1 {
		t.Errorf("%d containers of this machine known, want 1 (nothing duplicated)", n)
	}
}

// rawDrops is the packet counter of the anti-spoofing rule.
func rawDrops(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("iptables", "-w", "-t", "raw", "-L", "UNCLOUD-T-RAW", "-v", "-x", "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("read counters: %v: %s", err, out)
	}
	// Only the bridge's anti-spoofing drops (in: the bridge); the chain
	// also drops mesh traffic arriving on other interfaces.
	n, rules := 0, 0
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[2] == "DROP" && f[5] == "uncloud-tbr" {
			var c int
			fmt.Sscan(f[0], &c)
			n += c
			rules++
		}
	}
	if rules != 2 {
		t.Fatalf("%d bridge DROP rules in UNCLOUD-T-RAW, want 2:\n%s", rules, out)
	}
	return n
}

// TestDockerAntiSpoofing: a container that forges its source address
// with a raw socket is dropped on the bridge before routing; the same
// datagram with its own address arrives.
func TestDockerAntiSpoofing(t *testing.T) {
	rt := newTestRuntime(t, "spoof")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := rt.Create(ctx, ContainerSpec{Service: "sp", Image: testimage.Tag})
	if err != nil {
		t.Fatal(err)
	}
	// Port 53: the only port of the host a container may send to (its
	// resolver); every other one is dropped on the way in.
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.210.250.1"), Port: 53})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.LocalAddr().(*net.UDPAddr).Port)
	received := make(chan string, 16)
	go func() {
		buf := make([]byte, 100)
		for {
			_, from, err := ln.ReadFromUDP(buf)
			if err != nil {
				return
			}
			received <- from.IP.String()
		}
	}()
	send := func(src string) {
		t.Helper()
		res, err := rt.Exec(ctx, c.ID, []string{"/echoserver", "spoof", src, "10.210.250.1", port})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("spoof from %s: %+v %v", src, res, err)
		}
	}
	before := rawDrops(t)
	for _, src := range []string{"10.210.7.9", "192.0.2.77", "10.210.250.1"} {
		send(src)
	}
	// Its own address passes: this also proves the raw socket works.
	send(c.Address)
	select {
	case from := <-received:
		if from != c.Address {
			t.Errorf("received a datagram from %s; want only the one from %s", from, c.Address)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the datagram with the container's own source never arrived")
	}
	select {
	case from := <-received:
		t.Errorf("a spoofed datagram from %s got through", from)
	case <-time.After(time.Second):
	}
	if got := rawDrops(t) - before; got != 3 {
		t.Errorf("anti-spoofing rules dropped %d packets, want the 3 forged ones", got)
	}
}
