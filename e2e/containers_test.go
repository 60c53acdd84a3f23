package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestContainersAcrossMachines: two machines, each with its own Docker
// Engine; a service spread over both; its containers reach each other by
// their mesh addresses through WireGuard with their own source addresses,
// and the internet through masquerade; scale, logs, exec, rm, bad input;
// kill -9 of an agent and a Docker restart leave records and rules true.
func TestContainersAcrossMachines(t *testing.T) {
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, withDocker, noDocker, userspace)

	var a, b api.ContainerInfo // web's replicas on m1 and m2

	if !t.Run("image push: m2 lacks the image until it is sent over the mesh", func(t *testing.T) {
		// Running there fails with why; image push sends it over the
		// mesh; a second push finds it there.
		out, err := c.uncloud(ctx, t, 0, "run", "--name", "early", "-m", "m2", "--pull", "never", testimage.Tag)
		if err == nil || !strings.Contains(err.Error()+out, "is not in Docker on m2") {
			t.Fatalf("run of an image m2 lacks: %v\n%s", err, out)
		}
		out, err = c.uncloud(ctx, t, 0, "image", "push", testimage.Tag, "-m", "m2")
		if err != nil || !strings.Contains(out, "m2: "+testimage.Tag+" ready") {
			t.Fatalf("image push: %v\n%s", err, out)
		}
		if _, err := c.engines[1].Client.ImageInspect(ctx, testimage.Tag); err != nil {
			t.Fatalf("m2's engine lacks the pushed image: %v", err)
		}
		out, err = c.uncloud(ctx, t, 0, "image", "push", testimage.Tag)
		if err != nil || !strings.Contains(out, "m2: "+testimage.Tag+" already there") {
			t.Fatalf("second image push: %v\n%s", err, out)
		}
		if out, err := c.uncloud(ctx, t, 0, "image", "push", "uncloud-test/absent:1"); err == nil || !strings.Contains(err.Error()+out, "not in Docker on m1") {
			t.Errorf("push of an absent image: %v\n%s", err, out)
		}
	}) {
		return
	}

	if !t.Run("run web, 2 replicas: spread over m1 and m2, in their subnets", func(t *testing.T) {
		var res api.ServiceResult
		if err := c.ucJSON(ctx, t, 0, &res, "run", "--name", "web", "--replicas", "2", "-p", "8080", "-o", "json", testimage.Tag); err != nil {
			t.Fatalf("run: %v", err)
		}
		machines := map[string]string{}
		for _, r := range res.Containers {
			if r.Error != "" {
				t.Fatalf("run: %s on %s: %s", r.Name, r.Machine, r.Error)
			}
			machines[r.Machine] = r.Name
		}
		if len(machines) != 2 || machines["m1"] == "" || machines["m2"] == "" {
			t.Fatalf("2 replicas not spread over m1 and m2 (the netstack m4 must be skipped): %+v", res)
		}
		web := c.running(ctx, t, 1, "web", 2) // seen from the other machine too
		byMachine := map[string]api.ContainerInfo{}
		for _, ci := range web {
			byMachine[ci.Machine] = ci
			if !netip.MustParsePrefix(fmt.Sprintf("10.210.%s.0/24", strings.TrimPrefix(ci.Machine, "m"))).Contains(netip.MustParseAddr(ci.Address)) {
				t.Errorf("%s on %s has address %s outside its machine's subnet", ci.Name, ci.Machine, ci.Address)
			}
			if len(ci.Ports) != 1 || ci.Ports[0] != "8080/tcp" {
				t.Errorf("%s ports %v, want [8080/tcp]", ci.Name, ci.Ports)
			}
		}
		a, b = byMachine["m1"], byMachine["m2"]
	}) {
		return
	}

	if !t.Run("container to container across the mesh: own source addresses, through WireGuard", func(t *testing.T) {
		before := peerBytes(ctx, t, c, 0)
		for _, pair := range [][2]api.ContainerInfo{{a, b}, {b, a}} {
			from, to := pair[0], pair[1]
			s, err := c.uncloud(ctx, t, 0, "exec", "--container", from.Name, "web", "/echoserver", "get", "http://"+to.Address+":8080/hello")
			if err != nil {
				t.Fatalf("%s (on %s) cannot reach %s at %s: %v", from.Name, from.Machine, to.Name, to.Address, err)
			}
			want := fmt.Sprintf("host=%s addr=%s remote=%s", to.Name, to.Address, from.Address)
			if !strings.Contains(s, want) {
				t.Errorf("%s -> %s answered %q, want %q (no NAT inside the mesh)", from.Name, to.Name, s, want)
			}
		}
		if after := peerBytes(ctx, t, c, 0); after <= before+1000 {
			t.Errorf("WireGuard counters on m1 moved %d bytes for two HTTP exchanges", after-before)
		}
	}) {
		return
	}

	if !t.Run("a container reaches the internet, masqueraded behind its host", func(t *testing.T) {
		// The internet is the lab's 198.18/15.
		inet := exec.Command("ip", "netns", "exec", c.lab.InternetNS(), c.echoBin)
		inet.Env = append(os.Environ(), "PORT=18080")
		if err := inet.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { inet.Process.Kill(); inet.Wait() }()
		eventuallyE2E(t, "container reaches the internet", 30*time.Second, func() error {
			s, err := c.uncloud(ctx, t, 0, "exec", "--container", a.Name, "web", "/echoserver", "get", "http://"+lab.Gateway.String()+":18080/")
			if err != nil {
				return err
			}
			if want := "remote=" + c.hosts[0].PublicAddr.String(); !strings.Contains(s, want) {
				t.Fatalf("internet server saw %q, want %s (masqueraded behind m1)", s, want)
			}
			return nil
		})
	}) {
		return
	}

	if !t.Run("logs merged and prefixed; logs -f follows a new request", func(t *testing.T) {
		logs, err := c.uncloud(ctx, t, 1, "logs", "web")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{a.Name + "@m1 | listening on :8080", b.Name + "@m2 | listening on :8080",
			b.Name + "@m2 | request /hello from " + a.Address} {
			if !strings.Contains(logs, want) {
				t.Errorf("logs lack %q:\n%s", want, logs)
			}
		}
		follow, err := c.hosts[1].Start("logs-f", c.lab.Uncloud, "logs", "-f", "--tail", "0", "web")
		if err != nil {
			t.Fatal(err)
		}
		defer follow.Stop(5 * time.Second)
		eventuallyE2E(t, "logs -f shows a new request", 60*time.Second, func() error {
			if _, err := c.uncloud(ctx, t, 0, "exec", "--container", a.Name, "web", "/echoserver", "get", "http://"+b.Address+":8080/followed"); err != nil {
				return err
			}
			if want := b.Name + "@m2 | request /followed from " + a.Address; !strings.Contains(follow.Output(), want) {
				return fmt.Errorf("logs -f output lacks %q:\n%s", want, follow.Output())
			}
			return nil
		})
	}) {
		return
	}

	if !t.Run("scaled up to 4 (2 per machine), then down to 1", func(t *testing.T) {
		if _, err := c.uncloud(ctx, t, 1, "scale", "web", "4"); err != nil {
			t.Fatalf("scale up: %v", err)
		}
		up := c.running(ctx, t, 0, "web", 4)
		count := map[string]int{}
		for _, ci := range up {
			count[ci.Machine]++
		}
		if count["m1"] != 2 || count["m2"] != 2 {
			t.Errorf("4 replicas placed %v, want 2 and 2", count)
		}
		if _, err := c.uncloud(ctx, t, 0, "scale", "web", "1"); err != nil {
			t.Fatalf("scale down: %v", err)
		}
		c.running(ctx, t, 1, "web", 1)
	}) {
		return
	}

	if !t.Run("bad input refused with what was wrong, nothing left behind", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"run", "--name", "x1", "-m", "nosuch", testimage.Tag}, `unknown machine "nosuch"`},
			{[]string{"run", "--name", "x2", "-m", "m2", "--pull", "never", "uncloud-test/absent:1"}, `"uncloud-test/absent:1" is not in Docker on m2`},
			{[]string{"run", "--name", "x3", "-p", "80/sctp", testimage.Tag}, `unknown protocol "sctp"`},
			{[]string{"run", "--name", "web", testimage.Tag}, `service "web" exists`},
			{[]string{"run", "--name", "Bad_Name", testimage.Tag}, `service name "Bad_Name"`},
			{[]string{"scale", "nosuch", "2"}, `no service "nosuch"`},
			{[]string{"run", "--name", "x4", "-m", "m3", testimage.Tag}, "Docker is not available on m3"},
			{[]string{"run", "--name", "x5", "-m", "m4", testimage.Tag}, "netstack mode"},
		} {
			out, err := c.uncloud(ctx, t, 0, tc.args...)
			if err == nil || !strings.Contains(err.Error()+out, tc.want) {
				t.Errorf("%v: %v %s; want an error with %q", tc.args, err, out, tc.want)
			}
		}
		var svcs []api.ServiceInfo
		if err := c.ucJSON(ctx, t, 0, &svcs, "ls", "-o", "json"); err != nil || len(svcs) != 1 || svcs[0].Name != "web" {
			t.Errorf("services after bad input: %+v %v, want only web", svcs, err)
		}
	}) {
		return
	}

	if !t.Run("machine ls says which machines run containers, and why the others do not", func(t *testing.T) {
		want := map[string]string{"m1": "yes", "m2": "yes", "m3": "no: ", "m4": "no: the mesh runs in userspace"}
		eventuallyE2E(t, "every machine's containers capability, as m2 sees it", 30*time.Second, func() error {
			for _, m := range c.machines(ctx, t, 1) {
				if w := want[m.Name]; !strings.HasPrefix(m.Containers, w) || (w == "yes") != (m.Containers == "yes") {
					return fmt.Errorf("%s: containers %q, want %q…", m.Name, m.Containers, w)
				}
			}
			return nil
		})
		out, err := c.uncloud(ctx, t, 0, "machine", "ls")
		if err != nil || !strings.Contains(out, "CONTAINERS") || !strings.Contains(out, "m4 runs no containers: the mesh runs in userspace") {
			t.Errorf("machine ls: %v\n%s", err, out)
		}
	}) {
		return
	}

	// kill -9 of m2's agent, restart: records stay true, rules are not
	// duplicated.
	if !t.Run("m2's agent killed -9: its container listed unreachable; restarted, rules not duplicated", func(t *testing.T) {
		c.running(ctx, t, 0, "web", 1)
		if _, err := c.uncloud(ctx, t, 0, "scale", "web", "2"); err != nil {
			t.Fatal(err)
		}
		c.running(ctx, t, 0, "web", 2)
		rulesBefore := c.jumps(ctx, t, 1)
		c.procs[1].Signal(syscall.SIGKILL)
		c.procs[1].Wait(ctx)
		// While m2 is down, m1 still lists its container, marked unreachable.
		eventuallyE2E(t, "m2's container shown as unreachable", 60*time.Second, func() error {
			for _, ci := range c.ps(ctx, t, 0) {
				if ci.Machine == "m2" && ci.Service == "web" {
					if ci.MachineState != "unreachable" {
						return fmt.Errorf("%s: machine state %q", ci.Name, ci.MachineState)
					}
					return nil
				}
			}
			return errors.New("m2's container is not listed at all")
		})
		if out, err := c.uncloud(ctx, t, 0, "ps"); err != nil || !strings.Contains(out, "m2 (unreachable)") {
			t.Errorf("ps table does not say m2 is unreachable: %v\n%s", err, out)
		}
		c.startAgentWithDocker(ctx, t, 1, "agent")
		c.waitAllAlive(ctx, t, 60*time.Second)
		c.waitNetwork(ctx, t, 1)
		// The new agent's first full pass (network, rules, every
		// container) has finished once its runtime answers: m2 says
		// whether it has an image only when that runtime is ready.
		took := testkit.Eventually(t, "m2's runtime ready after its first full pass", 60*time.Second, func() error {
			out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag, "-m", "m2")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.Contains(out, "m2: "+testimage.Tag+" already there") {
				return fmt.Errorf("image push says %q", out)
			}
			return nil
		})
		t.Logf("m2's runtime ready %v after its network was", took.Round(10*time.Millisecond))
		rulesAfter := c.jumps(ctx, t, 1)
		for k, n := range rulesAfter {
			if n != 1 || rulesBefore[k] != 1 {
				t.Errorf("after kill -9 and restart: %q appears %d times (before: %d)", k, n, rulesBefore[k])
			}
		}
		if len(rulesAfter) != len(rulesBefore) || len(rulesAfter) < 10 {
			t.Errorf("rules: %d before, %d after", len(rulesBefore), len(rulesAfter))
		}
		c.running(ctx, t, 0, "web", 2)
	}) {
		return
	}

	// Docker restarts on m2: its containers come back (unless-stopped),
	// the agent re-checks its network and rules and the records follow.
	if !t.Run("Docker restarted on m2: its container back, reached from m1", func(t *testing.T) {
		c.engines[1].Stop()
		if err := c.engines[1].Start(ctx); err != nil {
			t.Fatal(err)
		}
		after := c.running(ctx, t, 0, "web", 2)
		for _, ci := range after {
			if ci.Machine != "m2" {
				continue
			}
			var from api.ContainerInfo
			for _, x := range after {
				if x.Machine == "m1" {
					from = x
				}
			}
			eventuallyE2E(t, "cross-machine traffic after the Docker restart", 60*time.Second, func() error {
				s, err := c.uncloud(ctx, t, 0, "exec", "--container", from.Name, "web", "/echoserver", "get", "http://"+ci.Address+":8080/")
				if err != nil {
					return err
				}
				if !strings.Contains(s, "remote="+from.Address) {
					return fmt.Errorf("answer %q", s)
				}
				return nil
			})
		}
	}) {
		return
	}

	t.Run("rm: gone from every list and engine", func(t *testing.T) {
		if _, err := c.uncloud(ctx, t, 1, "rm", "web"); err != nil {
			t.Fatalf("rm: %v", err)
		}
		eventuallyE2E(t, "no containers after rm", 60*time.Second, func() error {
			for i := range c.hosts {
				if cs := c.ps(ctx, t, i); len(cs) != 0 {
					return fmt.Errorf("%s still lists %+v", c.hosts[i].Name, cs)
				}
				if c.engines[i] == nil {
					continue
				}
				list, err := c.engines[i].Client.ContainerList(ctx, container.ListOptions{All: true})
				if err != nil || len(list) != 0 {
					return fmt.Errorf("engine of %s still has %d containers (%v)", c.hosts[i].Name, len(list), err)
				}
			}
			return nil
		})
	})
}

// TestDeployRollingUpdate: a Compose file deployed on two machines, then
// changed (replaced start-first, container by container), then changed
// with a health check that fails: the rollout stops and the old
// containers keep running.
func TestDeployRollingUpdate(t *testing.T) {
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, withDocker)
	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag); err != nil {
		t.Fatalf("image push: %v\n%s", err, out)
	}
	dir := filepath.Join(c.hosts[0].Dir, "app")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	compose := func(t *testing.T, version, probe string) string {
		t.Helper()
		body := fmt.Sprintf(`services:
  web:
    image: %s
    environment:
      VERSION: "%s"
    ports: ["8080"]
    deploy:
      replicas: 2
    healthcheck:
      test: ["CMD", "/echoserver", "get", "%s"]
`, testimage.Tag, version, probe)
		path := filepath.Join(dir, "compose-"+version+".yaml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	healthy := "http://127.0.0.1:8080/"
	spec := func(t *testing.T) string {
		t.Helper()
		var det api.ServiceDetail
		if err := c.ucJSON(ctx, t, 1, &det, "inspect", "web"); err != nil {
			t.Fatal(err)
		}
		return string(det.Spec)
	}
	// version is VERSION in the environment of web's containers as Docker
	// has it; the service record keeps the value sealed (names only).
	version := func(t *testing.T) string {
		t.Helper()
		if s := spec(t); strings.Contains(s, "VERSION=") || !strings.Contains(s, `"VERSION"`) {
			t.Errorf("the service record does not keep the environment sealed (names only): %s", s)
		}
		vs := map[string]bool{}
		for _, ci := range c.running(ctx, t, 0, "web", 2) {
			i, err := strconv.Atoi(strings.TrimPrefix(ci.Machine, "m"))
			if err != nil || i < 1 || i > len(c.engines) || c.engines[i-1] == nil {
				t.Fatalf("no engine for machine %s", ci.Machine)
			}
			j, err := c.engines[i-1].Client.ContainerInspect(ctx, ci.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range j.Config.Env {
				if v, ok := strings.CutPrefix(kv, "VERSION="); ok {
					vs[v] = true
				}
			}
		}
		if len(vs) != 1 {
			return fmt.Sprint(vs)
		}
		for v := range vs {
			return v
		}
		return ""
	}
	names := func(t *testing.T) []string {
		t.Helper()
		var out []string
		eventuallyE2E(t, "2 healthy web containers", 60*time.Second, func() error {
			out = nil
			for _, ci := range c.running(ctx, t, 0, "web", 2) {
				if ci.Health != "healthy" {
					return fmt.Errorf("%s is %q", ci.Name, ci.Health)
				}
				out = append(out, ci.Name)
			}
			return nil
		})
		return out
	}
	var v1, v2 []string // the containers of versions 1 and 2

	if !t.Run("version 1 deployed: two healthy containers; the same file again changes nothing", func(t *testing.T) {
		out, err := c.uncloud(ctx, t, 0, "deploy", "-p", "default", "-f", compose(t, "1", healthy))
		if err != nil {
			t.Fatalf("first deploy: %v\n%s", err, out)
		}
		if strings.Count(out, "create web on m") != 2 || !strings.Contains(out, "done web") {
			t.Errorf("first deploy output:\n%s", out)
		}
		v1 = names(t)
		if v := version(t); v != "1" {
			t.Errorf("VERSION after the first deploy: %s", v)
		}
		if out, err := c.uncloud(ctx, t, 0, "deploy", "-p", "default", "-f", compose(t, "1", healthy)); err != nil || !strings.Contains(out, "unchanged web: 2 containers") {
			t.Errorf("repeated deploy: %v\n%s", err, out)
		}
	}) {
		return
	}

	if !t.Run("version 2 replaces them container by container, start-first", func(t *testing.T) {
		out, err := c.uncloud(ctx, t, 0, "deploy", "-p", "default", "-f", compose(t, "2", healthy))
		if err != nil {
			t.Fatalf("second deploy: %v\n%s", err, out)
		}
		for _, old := range v1 {
			// start-first: the replacement is healthy before the old one goes.
			created := strings.Index(out, "replaces "+old)
			removed := strings.Index(out, "removed web "+old)
			if created < 0 || removed < 0 || created > removed || !strings.Contains(out[created:removed], "healthy web") {
				t.Errorf("%s not replaced start-first:\n%s", old, out)
			}
		}
		v2 = names(t)
		for _, n := range v2 {
			if slices.Contains(v1, n) {
				t.Errorf("container %s of the first version still runs after the update", n)
			}
		}
		if v := version(t); v != "2" {
			t.Errorf("VERSION after the second deploy: %s", v)
		}
	}) {
		return
	}

	t.Run("version 3 fails its health check: the rollout rolls back, version 2 keeps running", func(t *testing.T) {
		out, err := c.uncloud(ctx, t, 0, "deploy", "-p", "default", "-f", compose(t, "3", "http://127.0.0.1:1/"))
		if err == nil || !strings.Contains(err.Error()+out, "rolled back") || !strings.Contains(err.Error()+out, "unhealthy") {
			t.Fatalf("deploy with a failing health check: %v\n%s", err, out)
		}
		if got := names(t); !slices.Equal(sorted(got), sorted(v2)) {
			t.Errorf("after the failed rollout %v run, want the previous %v", got, v2)
		}
		if v := version(t); v != "2" {
			t.Errorf("VERSION after the failed deploy: %s", v)
		}
		for i := range c.hosts {
			list, err := c.engines[i].Client.ContainerList(ctx, container.ListOptions{All: true})
			if err != nil || len(list) != 1 {
				t.Errorf("engine of %s has %d containers after the failed rollout, want 1 (%v)", c.hosts[i].Name, len(list), err)
			}
		}
	})
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
