package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestUninstall: a machine with Docker runs a container; `uncloud
// uninstall` refuses without a terminal or --yes, then with --yes --purge
// leaves nothing of uncloud on the host (agent, interface, routes incl.
// the fail-closed one, iptables chains, nft table, Docker network and
// containers, data dir) while a chain, an nft table and a route into the
// mesh range that the operator made stay. A second run finds nothing.
func TestUninstall(t *testing.T) {
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker)
	h, engine := c.hosts[0], c.engines[0]
	run := func(args ...string) (string, error) {
		return h.Run(ctx, "env", append([]string{"DOCKER_HOST=" + engine.DockerHost(), c.lab.Uncloud}, args...)...)
	}
	sh := func(script string) string {
		t.Helper()
		out, err := h.Run(ctx, "sh", "-c", script)
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		return out
	}

	// The operator's own things, which uninstall must not touch: one in
	// each place it cleans, named alike where that could confuse it.
	sh(`iptables -w -N OPERATOR-UNCLOUDISH && iptables -w -A OPERATOR-UNCLOUDISH -j RETURN && iptables -w -A INPUT -j OPERATOR-UNCLOUDISH`)
	sh(`nft add table ip operator_keep`)
	sh(`ip route add blackhole 10.210.250.0/24`)

	if out, err := c.uncloud(ctx, t, 0, "run", "--name", "web", "--pull", "never", testimage.Tag); err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	c.running(ctx, t, 0, "web", 1)
	before := sh(`ip route show table all; iptables-save; nft list tables`)
	for _, want := range []string{"unreachable 10.210.0.0/16", "dev uncloud", "UNCLOUD-FWD", "table ip uncloud"} {
		if !strings.Contains(before, want) {
			t.Fatalf("before uninstall the host lacks %q:\n%s", want, before)
		}
	}

	t.Run("refuses without a terminal or --yes, changing nothing", func(t *testing.T) {
		out, err := run("uninstall")
		if err == nil || !strings.Contains(out+err.Error(), "--yes") {
			t.Fatalf("uninstall without --yes: err %v\n%s", err, out)
		}
		if !strings.Contains(out, "This removes from this host:") || !strings.Contains(out, "the fail-closed route") {
			t.Fatalf("no plan shown:\n%s", out)
		}
		if !c.procs[0].Alive() {
			t.Fatal("the agent stopped although uninstall refused")
		}
	})

	start := time.Now()
	out, err := run("uninstall", "--yes", "--purge")
	t.Logf("uninstall --yes --purge took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("uninstall: %v", err)
	}

	t.Run("the agent is gone", func(t *testing.T) {
		select {
		case <-c.procs[0].Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the agent process still runs")
		}
	})
	t.Run("no interface, no uncloud routes, the operator's route stays", func(t *testing.T) {
		if links := sh(`ip -o link show`); strings.Contains(links, ": uncloud") {
			t.Fatalf("uncloud interfaces left:\n%s", links)
		}
		routes := sh(`ip route show table all`)
		for _, l := range strings.Split(routes, "\n") {
			if strings.Contains(l, "10.210.") && !strings.Contains(l, "10.210.250.0/24") {
				t.Errorf("route into the mesh left: %s", l)
			}
		}
		if !strings.Contains(routes, "blackhole 10.210.250.0/24") {
			t.Errorf("the operator's route was removed:\n%s", routes)
		}
	})
	t.Run("no uncloud chains or table, the operator's stay", func(t *testing.T) {
		ipt := sh(`iptables-save`)
		if strings.Contains(ipt, "UNCLOUD-") {
			t.Errorf("uncloud chains left:\n%s", ipt)
		}
		if !strings.Contains(ipt, "-A INPUT -j OPERATOR-UNCLOUDISH") || !strings.Contains(ipt, "-A OPERATOR-UNCLOUDISH -j RETURN") {
			t.Errorf("the operator's chain was touched:\n%s", ipt)
		}
		nft := sh(`nft list tables`)
		if strings.Contains(nft, "table ip uncloud\n") || strings.HasSuffix(strings.TrimSpace(nft), "table ip uncloud") {
			t.Errorf("nft table left:\n%s", nft)
		}
		if !strings.Contains(nft, "table ip operator_keep") {
			t.Errorf("the operator's nft table was removed:\n%s", nft)
		}
	})
	t.Run("no uncloud network or containers in Docker", func(t *testing.T) {
		if _, err := engine.Client.NetworkInspect(ctx, "uncloud", network.InspectOptions{}); err == nil {
			t.Error("Docker network uncloud left")
		}
		cs, err := engine.Client.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", "uncloud.machine"))})
		if err != nil || len(cs) > 0 {
			t.Errorf("uncloud containers left: %v %+v", err, cs)
		}
	})
	t.Run("no data, config or socket left", func(t *testing.T) {
		if left := sh(`find /var/lib/uncloud /etc/uncloud /run/uncloud -mindepth 1`); strings.TrimSpace(left) != "" {
			t.Errorf("files left:\n%s", left)
		}
	})
	t.Run("a second run finds nothing and succeeds", func(t *testing.T) {
		out, err := run("uninstall", "--yes", "--purge")
		if err != nil || !strings.Contains(out, "Nothing of uncloud is left on this host.") {
			t.Fatalf("second uninstall: %v\n%s", err, out)
		}
		// Without --yes too: there is nothing to confirm.
		if out, err := run("uninstall"); err != nil {
			t.Fatalf("third uninstall, no --yes: %v\n%s", err, out)
		}
	})
}
