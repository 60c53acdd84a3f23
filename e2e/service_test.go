package e2e

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestServiceEndToEnd is the whole path of a service, with real
// containers and nothing written behind the agents' backs: `uncloud run`
// puts two replicas on m1 and m2 (each with its own dockerd) with a
// published HTTP route; every machine's resolver answers web.internal with
// both, a container reaches the service by that name, and the ingress on
// m3 (netstack, no Docker) serves app.test from both. Then `scale` to one
// and `rm`: the resolvers and the ingress follow.
func TestServiceEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("dig not installed (Debian dnsutils; scripts/test installs it)")
	}
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, withDocker, userspace)
	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag, "-m", "m2"); err != nil {
		t.Fatalf("image push: %v\n%s", err, out)
	}
	if out, err := c.uncloud(ctx, t, 0, "machine", "role", "add", "m3", "ingress"); err != nil {
		t.Fatalf("role add: %v\n%s", err, out)
	}
	machines := map[string]string{}
	for _, m := range c.machines(ctx, t, 0) {
		machines[m.Name] = m.Address
	}
	var (
		web   []api.ContainerInfo // the two replicas, as m3 sees them
		addrs []string            // their addresses, sorted
		names = map[string]bool{}
		probe *lab.Process // asks m3's ingress for app.test from h1
	)
	// seen waits until the probe's answers after from came from exactly
	// the containers in want, and returns the output's length then.
	seen := func(t *testing.T, from int, want map[string]bool, timeout time.Duration) int {
		t.Helper()
		n := 0
		testkit.Eventually(t, fmt.Sprintf("ingress on m3 answering from %v", want), timeout, func() error {
			out := probe.Output()
			got := map[string]bool{}
			for _, line := range strings.Split(out[from:], "\n") {
				if f := strings.Fields(line); len(f) > 1 && f[0] == "ok" && strings.HasPrefix(f[1], "host=") {
					got[strings.TrimPrefix(f[1], "host=")] = true
				}
			}
			if !maps.Equal(got, want) {
				return fmt.Errorf("answered from %v; probe output since:\n%s", got, lastBytes(out[from:], 2000))
			}
			n = len(out)
			return nil
		})
		return n
	}

	if !t.Run("uncloud run: two replicas on m1 and m2", func(t *testing.T) {
		// stderr too: run reports each container as it comes up.
		out, err := c.hosts[0].Run(ctx, "sh", "-c", c.lab.Uncloud+" run --name web --replicas 2 -p app.test:8080/http "+testimage.Tag+" 2>&1")
		if err != nil {
			t.Fatalf("run: %v\n%s", err, out)
		}
		if !strings.Contains(out, "[1/2] m") || !strings.Contains(out, "[2/2] m") || !strings.Contains(out, "RESULT") {
			t.Errorf("run printed no progress before its table:\n%s", out)
		}
		web = c.running(ctx, t, 2, "web", 2) // as m3 sees it
		for _, ci := range web {
			addrs = append(addrs, ci.Address)
			names[ci.Name] = true
		}
		slices.Sort(addrs)
	}) {
		return
	}

	if !t.Run("every resolver answers web.internal with both", func(t *testing.T) {
		// Asked from h1 (m3's resolver lives in its netstack and is
		// reached through the tunnel).
		start := time.Now()
		for _, m := range []string{"m1", "m2", "m3"} {
			waitDig(ctx, t, c.hosts[0], machines[m], "web.internal", "A", addrs, 30*time.Second)
		}
		t.Logf("web.internal answers both containers on all three resolvers %v after ps showed them", time.Since(start).Round(10*time.Millisecond))
	}) {
		return
	}

	if !t.Run("a container reaches the service by name across the mesh", func(t *testing.T) {
		// Docker's embedded DNS forwards to the machine's resolver.
		from := web[0].Name
		eventuallyE2E(t, "a container reaches web.internal", 30*time.Second, func() error {
			s, err := c.uncloud(ctx, t, 0, "exec", "--container", from, "web", "/echoserver", "get", "http://web.internal:8080/")
			if err != nil {
				return err
			}
			if !strings.Contains(s, "host=web-") {
				return fmt.Errorf("answer %q", s)
			}
			return nil
		})
	}) {
		return
	}

	if !t.Run("the ingress on m3 serves app.test from both", func(t *testing.T) {
		var err error
		probe, err = c.hosts[0].StartHelper(ctx, "probe", "httpprobe", true,
			"-url", "http://"+c.hosts[2].Addr.String()+"/", "-host", "app.test", "-every", "100ms")
		if err != nil {
			t.Fatal(err)
		}
		seen(t, 0, names, 60*time.Second)
		t.Logf("the ingress on m3 serves app.test from %d containers", len(names))
	}) {
		return
	}

	if !t.Run("scaled to one: the resolvers and the ingress keep only it", func(t *testing.T) {
		if out, err := c.uncloud(ctx, t, 1, "scale", "web", "1"); err != nil {
			t.Fatalf("scale: %v\n%s", err, out)
		}
		left := c.running(ctx, t, 2, "web", 1)
		for _, m := range []string{"m1", "m3"} {
			waitDig(ctx, t, c.hosts[0], machines[m], "web.internal", "A", []string{left[0].Address}, 30*time.Second)
		}
		// Only the remaining container answers once m3's route has
		// changed, which may be after the resolvers changed: wait until
		// the latest answers, after the last one from another container,
		// are three in a row from the one left.
		from := len(probe.Output())
		mark := 0
		testkit.Eventually(t, "the ingress on m3 answering from "+left[0].Name+" alone", 30*time.Second, func() error {
			out := probe.Output()
			run := 0
			for _, line := range strings.Split(out[from:], "\n") {
				if f := strings.Fields(line); len(f) > 1 && f[0] == "ok" && strings.HasPrefix(f[1], "host=") {
					if strings.TrimPrefix(f[1], "host=") == left[0].Name {
						run++
					} else {
						run = 0
					}
				}
			}
			if run < 3 {
				return fmt.Errorf("%d answers in a row from %s; probe output since the scale-down:\n%s", run, left[0].Name, lastBytes(out[from:], 2000))
			}
			mark = len(out)
			return nil
		})
		// Observation window, not a wait: for the next second no request
		// fails.
		time.Sleep(time.Second)
		if recent := probe.Output()[mark:]; strings.Contains(recent, "fail") {
			t.Errorf("requests failed after the scale-down settled:\n%s", lastBytes(recent, 2000))
		}
	}) {
		return
	}

	t.Run("removed: no answers, the ingress has no route", func(t *testing.T) {
		if out, err := c.uncloud(ctx, t, 0, "rm", "web"); err != nil {
			t.Fatalf("rm: %v\n%s", err, out)
		}
		for _, m := range []string{"m1", "m2", "m3"} {
			waitDig(ctx, t, c.hosts[0], machines[m], "web.internal", "A", nil, 30*time.Second)
		}
		eventuallyE2E(t, "the ingress drops app.test", 30*time.Second, func() error {
			out := probe.Output()
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, "fail status 404") && !strings.HasPrefix(last, "fail status 502") {
				return fmt.Errorf("last probe answer %q", last)
			}
			return nil
		})
	})
}

// lastBytes is the end of a long log, for a failure message.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
