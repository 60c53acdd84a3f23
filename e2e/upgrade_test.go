package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestUpgrade: three machines, each with its own dockerd and its own
// copy of the uncloud binary, run web (3 replicas) behind the ingress on
// m1 while a client asks the ingress for it every 100 ms. `machine upgrade
// --all` rolls a build stamped with another version across them: every
// machine ends on it in `machine ls`, with the old binary kept as
// .previous, the containers are the same ones (Docker owns them), and no
// request fails. Then a build that fails at startup (fault injection)
// goes to m2: m2 puts its previous binary back and runs it again, and the
// command fails naming m2 and why.
func TestUpgrade(t *testing.T) {
	good, bad, err := variants.get()
	// Only this test installs them: 100 MB of binaries go with it.
	t.Cleanup(func() { os.RemoveAll(variants.dir) })
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	own := func(i int, h *lab.Host) (string, error) {
		src, err := lab.UncloudBinary()
		if err != nil {
			return "", err
		}
		bin := filepath.Join(h.Dir, "bin", "uncloud")
		return bin, copyFile(src, bin, 0o755)
	}
	c := newContainerLabWith(ctx, t, labShape{binary: own}, withDocker, withDocker, withDocker)
	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag); err != nil {
		t.Fatalf("image push: %v\n%s", err, out)
	}
	if out, err := c.uncloud(ctx, t, 0, "machine", "role", "add", "m1", "ingress"); err != nil {
		t.Fatalf("role add: %v\n%s", err, out)
	}
	compose := filepath.Join(c.hosts[0].Dir, "upgrade.yaml")
	if err := os.WriteFile(compose, []byte(fmt.Sprintf(`services:
  web:
    image: %s
    ports: ["app.test:8080/http"]
    deploy:
      replicas: 3
`, testimage.Tag)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := c.uncloud(ctx, t, 0, "deploy", "-p", "default", "-f", compose); err != nil {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	c.running(ctx, t, 0, "web", 3)
	// ids are the containers each engine has, which an agent restart
	// must not change.
	ids := func(t *testing.T) []string {
		t.Helper()
		var out []string
		for i, e := range c.engines {
			list, err := e.Client.ContainerList(ctx, container.ListOptions{All: true})
			if err != nil {
				t.Fatalf("containers of %s: %v", c.hosts[i].Name, err)
			}
			for _, ct := range list {
				out = append(out, c.hosts[i].Name+":"+ct.ID[:12]+":"+ct.State)
			}
		}
		slices.Sort(out)
		return out
	}
	before := ids(t)
	probe, err := c.hosts[1].StartHelper(ctx, "probe", "httpprobe", true,
		"-url", "http://"+c.hosts[0].Addr.String()+"/", "-host", "app.test", "-every", "100ms")
	if err != nil {
		t.Fatal(err)
	}
	eventuallyE2E(t, "the ingress answering from 3 containers", 60*time.Second, func() error {
		hosts := map[string]bool{}
		for _, l := range strings.Split(probe.Output(), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "ok" {
				hosts[f[1]] = true
			}
		}
		if len(hosts) < 3 {
			return fmt.Errorf("answers from %d containers", len(hosts))
		}
		return nil
	})
	oldSum := fileSum(c.bins[0])

	if !t.Run("upgrade --all: one machine at a time, no request fails, containers stay", func(t *testing.T) {
		mark := len(probe.Output())
		began := time.Now()
		out, err := c.uncloud(ctx, t, 0, "machine", "upgrade", "--all", "--binary", good)
		took := time.Since(began)
		if err != nil {
			t.Fatalf("machine upgrade: %v\n%s", err, out)
		}
		t.Logf("machine upgrade --all: %v\n%s", took.Round(100*time.Millisecond), out)
		// Let the probe ask a few more times after the last restart.
		after := len(probe.Output())
		eventuallyE2E(t, "the probe answering after the roll", 30*time.Second, func() error {
			if ok, _, _, _ := probeCounts(probe.Output()[after:]); ok < 5 {
				return fmt.Errorf("%d answers since", ok)
			}
			return nil
		})
		ok, failed, slowest, fails := probeCounts(probe.Output()[mark:])
		t.Logf("during the roll: %d requests answered, %d failed, slowest answer %v", ok, failed, slowest)
		if failed > 0 {
			t.Errorf("%d requests failed during the roll:\n%s", failed, strings.Join(fails, "\n"))
		}
		// Progress lines name each machine, m1 (the CLI's) last.
		i2, i3, i1 := strings.Index(out, "✓ m2"), strings.Index(out, "✓ m3"), strings.Index(out, "✓ m1")
		if i2 < 0 || i3 < 0 || i1 < 0 || i1 < i2 || i1 < i3 {
			t.Errorf("progress lines: want ✓ for m2, m3 and then m1:\n%s", out)
		}
		for _, m := range c.machines(ctx, t, 0) {
			if m.Version != upgradeVersion {
				t.Errorf("machine ls: %s is on %q, want %q", m.Name, m.Version, upgradeVersion)
			}
		}
		for i, bin := range c.bins {
			if got := fileSum(bin); got != fileSum(good) {
				t.Errorf("%s's binary is not the new one", c.hosts[i].Name)
			}
			if got := fileSum(bin + ".previous"); got != oldSum {
				t.Errorf("%s's .previous is not the old binary", c.hosts[i].Name)
			}
		}
		if got := ids(t); !slices.Equal(got, before) {
			t.Errorf("containers changed across the restarts:\nbefore %v\nafter  %v", before, got)
		}
	}) {
		return
	}

	t.Run("a binary that fails at startup: m2 goes back to its previous binary, the command names it", func(t *testing.T) {
		began := time.Now()
		out, err := c.uncloud(ctx, t, 0, "machine", "upgrade", "m2", "--binary", bad)
		t.Logf("machine upgrade m2 (failing binary): %v, %v\n%s", took(began), err, out)
		if err == nil {
			t.Fatalf("machine upgrade to a failing binary succeeded:\n%s", out)
		}
		// The reason is on stderr, which the lab's Run puts in the error.
		said := out + err.Error()
		for _, want := range []string{"upgrade stopped at m2", "back on version " + upgradeVersion, "fault injection"} {
			if !strings.Contains(said, want) {
				t.Errorf("the command does not say %q:\n%s", want, said)
			}
		}
		if got := fileSum(c.bins[1]); got != fileSum(good) {
			t.Errorf("m2's binary is not the previous one again")
		}
		eventuallyE2E(t, "m2 alive on the previous version", 30*time.Second, func() error {
			for _, m := range c.machines(ctx, t, 0) {
				if m.Name == "m2" && (m.State != "alive" || m.Version != upgradeVersion) {
					return fmt.Errorf("m2 is %s on %q", m.State, m.Version)
				}
			}
			return nil
		})
		if got := ids(t); !slices.Equal(got, before) {
			t.Errorf("containers changed across the rollback:\nbefore %v\nafter  %v", before, got)
		}
	})
}

func took(since time.Time) time.Duration { return time.Since(since).Round(100 * time.Millisecond) }
