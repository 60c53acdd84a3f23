package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestRollback: three machines, each with its own dockerd, run web (3
// replicas, one per machine) behind the ingress on m1, while a client asks
// the ingress for it every 100 ms; 16 connections load the ingress for 3 s
// (the kernel-mode event loops) with no answer wrong. Version 2 rolls out;
// version 3's health check fails on the machine its rollout reaches
// second, so the rollout rolls back on both machines it touched (the first
// one's replacement is restored start-first) and version 2 runs everywhere
// again; `uncloud rollback` then returns to version 1. `history` shows each version and
// who deployed it. No request fails throughout.
func TestRollback(t *testing.T) {
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, withDocker, withDocker)
	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag); err != nil {
		t.Fatalf("image push: %v\n%s", err, out)
	}
	if out, err := c.uncloud(ctx, t, 0, "machine", "role", "add", "m1", "ingress"); err != nil {
		t.Fatalf("role add: %v\n%s", err, out)
	}
	dir := filepath.Join(c.hosts[0].Dir, "rollback")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// compose writes version's file; its health check fails in containers
	// with an address in failIn ("" for none).
	compose := func(t *testing.T, version, failIn string) string {
		t.Helper()
		test := `["CMD", "/echoserver", "get", "http://127.0.0.1:8080/"]`
		if failIn != "" {
			test = fmt.Sprintf(`["CMD", "/echoserver", "get-unless-in", "%s", "http://127.0.0.1:8080/"]`, failIn)
		}
		body := fmt.Sprintf(`services:
  web:
    image: %s
    environment:
      VERSION: "%s"
    ports: ["app.test:8080/http"]
    deploy:
      replicas: 3
      update_config:
        monitor: 2s
    healthcheck:
      test: %s
      interval: 1s
      timeout: 1s
      retries: 2
`, testimage.Tag, version, test)
		path := filepath.Join(dir, "compose-"+version+".yaml")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// versions are the VERSION of web's containers, by machine, as each
	// machine's Docker has them; every engine must have exactly one.
	versions := func(t *testing.T) map[string]string {
		t.Helper()
		out := map[string]string{}
		for i, e := range c.engines {
			list, err := e.Client.ContainerList(ctx, container.ListOptions{All: true})
			if err != nil || len(list) != 1 {
				t.Errorf("engine of %s has %d containers, want 1 (%v)", c.hosts[i].Name, len(list), err)
				continue
			}
			ci, err := e.Client.ContainerInspect(ctx, list[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range ci.Config.Env {
				if v, ok := strings.CutPrefix(kv, "VERSION="); ok {
					out[c.hosts[i].Name] = v
				}
			}
		}
		return out
	}
	all := func(v string) map[string]string {
		return map[string]string{c.hosts[0].Name: v, c.hosts[1].Name: v, c.hosts[2].Name: v}
	}
	healthy := func(t *testing.T) []api.ContainerInfo {
		t.Helper()
		var out []api.ContainerInfo
		eventuallyE2E(t, "3 healthy web containers", 60*time.Second, func() error {
			out = c.running(ctx, t, 0, "web", 3)
			for _, ci := range out {
				if ci.Health != "healthy" {
					return fmt.Errorf("%s is %q", ci.Name, ci.Health)
				}
			}
			return nil
		})
		return out
	}
	history := func(t *testing.T) []api.ServiceVersion {
		t.Helper()
		var vs []api.ServiceVersion
		if err := c.ucJSON(ctx, t, 1, &vs, "history", "web", "-o", "json"); err != nil {
			t.Fatal(err)
		}
		return vs
	}
	var probe *lab.Process
	// answered waits until the probe's answers after from come from n
	// distinct containers; the output's length then.
	answered := func(t *testing.T, from, n int) int {
		t.Helper()
		mark := 0
		eventuallyE2E(t, fmt.Sprintf("the ingress answering from %d containers", n), 60*time.Second, func() error {
			out := probe.Output()
			hosts := map[string]bool{}
			for _, line := range strings.Split(out[from:], "\n") {
				if f := strings.Fields(line); len(f) > 1 && f[0] == "ok" {
					hosts[f[1]] = true
				}
			}
			if len(hosts) < n {
				return fmt.Errorf("answers from %d: %s", len(hosts), lastBytes(out[from:], 1000))
			}
			mark = len(out)
			return nil
		})
		return mark
	}
	count := func(from int) (ok, failed int) {
		out := probe.Output()[from:]
		for _, l := range strings.Split(out, "\n") {
			switch {
			case strings.HasPrefix(l, "ok "):
				ok++
			case strings.HasPrefix(l, "fail "):
				failed++
			}
		}
		return ok, failed
	}

	if !t.Run("version 1 runs on the three machines behind the ingress", func(t *testing.T) {
		if out, err := c.uncloud(ctx, t, 0, "deploy", "-p", "default", "-f", compose(t, "1", "")); err != nil {
			t.Fatalf("deploy: %v\n%s", err, out)
		}
		healthy(t)
		var err error
		probe, err = c.hosts[1].StartHelper(ctx, "probe", "httpprobe", true,
			"-url", "http://"+c.hosts[0].Addr.String()+"/", "-host", "app.test", "-every", "100ms")
		if err != nil {
			t.Fatal(err)
		}
		answered(t, 0, 3)
	}) {
		return
	}
	start := len(probe.Output())

	// The ingress of a kernel-mode machine serves plain HTTP on its event
	// loops: under load, with the containers of two machines across the
	// mesh, every answer must be whole and right.
	if !t.Run("the ingress holds 16 busy keep-alive connections for 3 s", func(t *testing.T) {
		out, err := c.hosts[1].RunHelper(ctx, "httpload", "-url", "http://"+c.hosts[0].Addr.String(),
			"-host", "app.test", "-conns", "16", "-for", "3s")
		if err != nil {
			t.Fatalf("load: %v\n%s", err, out)
		}
		var res loadResult
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
			t.Fatalf("load result: %v\n%s", err, out)
		}
		t.Logf("load through the ingress: %d answered (p99 %.1f ms), %d failed, by container %v", res.OK, res.P99ms, res.Failed, res.Hosts)
		if res.Failed > 0 {
			t.Errorf("%d requests failed, the first:\n%s", res.Failed, strings.Join(res.Errors, "\n"))
		}
		if res.OK < 200 || len(res.Hosts) != 3 {
			t.Errorf("%d answers from %d containers, want at least 200 from 3", res.OK, len(res.Hosts))
		}
	}) {
		return
	}

	var v2 []api.ContainerInfo
	if !t.Run("version 2 rolls out; the history says who", func(t *testing.T) {
		began := time.Now()
		out, err := c.uncloud(ctx, t, 0, "deploy", "-p", "default", "-f", compose(t, "2", ""))
		if err != nil {
			t.Fatalf("deploy: %v\n%s", err, out)
		}
		t.Logf("rollout of 3 containers: %v", time.Since(began).Round(100*time.Millisecond))
		v2 = healthy(t)
		if got := versions(t); !maps.Equal(got, all("2")) {
			t.Errorf("versions %v, want 2 everywhere", got)
		}
		vs := history(t)
		if len(vs) != 2 || vs[0].N != 2 || !vs[0].Current || vs[0].Action != "deploy" || vs[0].Machine != "m1" ||
			!strings.HasPrefix(vs[0].User, "root@") || vs[0].Digest == "" {
			t.Errorf("history %+v", vs)
		}
	}) {
		return
	}

	if !t.Run("version 3 fails its health check on the second machine: rolled back on both it touched", func(t *testing.T) {
		// The rollout goes in container name order: the second one's
		// machine is where version 3 fails.
		slices.SortFunc(v2, func(a, b api.ContainerInfo) int { return strings.Compare(a.Name, b.Name) })
		first, second := v2[0], v2[1]
		cidr := second.Address + "/24"
		began := time.Now()
		out, err := c.uncloud(ctx, t, 0, "deploy", "-p", "default", "-f", compose(t, "3", cidr))
		took := time.Since(began)
		text := out
		if err != nil {
			text += err.Error()
		}
		if err == nil || !strings.Contains(text, "rolled back") || !strings.Contains(text, "unhealthy") {
			t.Fatalf("deploy with a failing health check on %s: %v\n%s", second.Machine, err, out)
		}
		t.Logf("failed rollout and its rollback: %v\n%s", took.Round(100*time.Millisecond), out)
		if !strings.Contains(out, "rollback web") || !strings.Contains(out, "on "+first.Machine+": restores "+first.Name) ||
			!strings.Contains(out, "rollback web "+second.Name+" on "+second.Machine+": kept "+second.Name) {
			t.Errorf("rollback lines for %s (restored) and %s (kept) missing:\n%s", first.Machine, second.Machine, out)
		}
		after := healthy(t)
		if got := versions(t); !maps.Equal(got, all("2")) {
			t.Errorf("versions after the rollback %v, want 2 everywhere", got)
		}
		names := map[string]bool{}
		for _, ci := range after {
			names[ci.Name] = true
		}
		if names[first.Name] || !names[second.Name] || !names[v2[2].Name] {
			t.Errorf("after the rollback %v: want %s replaced by a restored one, %s and %s kept", names, first.Name, second.Name, v2[2].Name)
		}
		var det api.ServiceDetail
		// The values are sealed in the record; versions() read them from Docker.
		if err := c.ucJSON(ctx, t, 2, &det, "inspect", "web"); err != nil || strings.Contains(string(det.Spec), "VERSION=") {
			t.Errorf("service spec after the rollback (%v): %s", err, det.Spec)
		}
		if vs := history(t); len(vs) != 2 {
			t.Errorf("a rolled-back deploy is in the history: %+v", vs)
		}
	}) {
		return
	}

	if !t.Run("uncloud rollback returns to version 1, and is a version itself", func(t *testing.T) {
		began := time.Now()
		out, err := c.uncloud(ctx, t, 1, "rollback", "web")
		if err != nil {
			t.Fatalf("rollback: %v\n%s", err, out)
		}
		t.Logf("rollback command: %v", time.Since(began).Round(100*time.Millisecond))
		healthy(t)
		if got := versions(t); !maps.Equal(got, all("1")) {
			t.Errorf("versions after rollback %v, want 1 everywhere", got)
		}
		vs := history(t)
		if len(vs) != 3 || vs[0].Action != "rollback" || vs[0].RollbackOf != 1 || vs[0].Machine != "m2" || !vs[0].Current {
			t.Errorf("history after rollback %+v", vs)
		}
		table, _ := c.uncloud(ctx, t, 0, "history", "web")
		t.Logf("uncloud history web:\n%s", table)
	}) {
		return
	}

	t.Run("no request failed throughout", func(t *testing.T) {
		mark := len(probe.Output())
		answered(t, mark, 3)
		ok, failed := count(start)
		t.Logf("requests through the ingress during the rollout, the failed rollout and the rollback: %d answered, %d failed", ok, failed)
		if failed > 0 {
			var fails []string
			for _, l := range strings.Split(probe.Output()[start:], "\n") {
				if strings.HasPrefix(l, "fail ") {
					fails = append(fails, l)
				}
			}
			t.Errorf("%d requests failed:\n%s", failed, strings.Join(fails, "\n"))
		}
	})
}
