package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// phase is one measured change: how long it took, how long its rollback
// took (from the failure to the end), and the client's requests meanwhile.
type phase struct {
	peer, what       string
	took, rollback   time.Duration
	answered, failed int
	note             string
}

// webSpec is version v of the measured service; its health check fails in
// containers with an address in failIn ("" for none).
func webSpec(v string, replicas int, failIn string) api.RunRequest {
	health := []string{"CMD", "/echoserver", "get", "http://127.0.0.1:8080/"}
	if failIn != "" {
		health = []string{"CMD", "/echoserver", "get-unless-in", failIn, "http://127.0.0.1:8080/"}
	}
	// The version is also a label: environment values are stored sealed
	// (the service's public spec names them only), labels in clear.
	return api.RunRequest{Name: "web", Image: testimage.Tag, Env: []string{"VERSION=" + v}, Labels: map[string]string{versionLabel: v},
		Ports:    []string{"app.test:8080/http"},
		Replicas: replicas, Pull: "never", Health: health, HealthInterval: time.Second, HealthTimeout: time.Second, HealthRetries: 2,
		Update: &api.UpdateConfig{Monitor: 2 * time.Second}}
}

// deployTimed deploys req and returns how long it took and how long from
// the first failure to the end (0 without one), with the number of
// machines where the rollback restored or kept the previous version.
func deployTimed(ctx context.Context, c *api.Client, req api.RunRequest) (took, rollback time.Duration, restored int, err error) {
	start := time.Now()
	var failedAt time.Time
	err = c.Deploy(ctx, api.DeployRequest{Services: []api.RunRequest{req}}, func(e api.DeployEvent) error {
		if e.Action == "failed" && failedAt.IsZero() {
			failedAt = time.Now()
		}
		if e.Action == "rollback" && e.Machine != "" {
			restored++
		}
		return nil
	})
	end := time.Now()
	if !failedAt.IsZero() {
		rollback = end.Sub(failedAt)
	}
	return end.Sub(start), rollback, restored, err
}

// versionLabel carries a version of web in its spec.
const versionLabel = "bench.version"

// healthyWeb waits until web has n running healthy containers of version
// v, and returns them in the order a rollout replaces them.
func healthyWeb(ctx context.Context, c *api.Client, n int, v string) ([]api.ContainerInfo, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cs, err := c.Containers(ctx)
		var web []api.ContainerInfo
		good := 0
		for _, ci := range cs {
			if ci.Service == "web" {
				web = append(web, ci)
				if ci.State == "running" && ci.Health == "healthy" {
					good++
				}
			}
		}
		if err == nil && good == n && len(web) == n {
			det, err := c.InspectService(ctx, "web")
			if err == nil && strings.Contains(string(det.Spec), `"`+versionLabel+`":"`+v+`"`) {
				slices.SortFunc(web, func(a, b api.ContainerInfo) int { return cmp.Compare(a.Name, b.Name) })
				return web, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("web has not %d healthy containers of version %s after 2 minutes (%d of %d; %v)", n, v, good, len(web), err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// lateMachine is the /24 of the machine that a rollout of web (in that
// order) reaches last: a failure there comes after every other machine
// was changed.
func lateMachine(web []api.ContainerInfo) (machine, cidr string) {
	first := map[string]int{}
	for i, ci := range web {
		if _, ok := first[ci.Machine]; !ok {
			first[ci.Machine] = i
		}
	}
	last := -1
	for _, ci := range web {
		if i := first[ci.Machine]; i > last {
			last, machine, cidr = i, ci.Machine, ci.Address+"/24"
		}
	}
	return machine, cidr
}

// measureUncloud runs web behind the ingress on m1 and measures a rolling
// update, a rollback after a failure on the first replacement, and one
// after a failure on the machine reached last.
func (b *bench) measureUncloud(ctx context.Context, c *api.Client, replicas int) ([]phase, error) {
	// Each engine imported the image on its own (another image ID): make
	// it m1's everywhere, which the service is pinned to.
	if out, err := b.Uncloud(ctx, 0, "image", "push", "--force", testimage.Tag); err != nil {
		return nil, fmt.Errorf("image push: %w\n%s", err, out)
	}
	if out, err := b.Uncloud(ctx, 0, "machine", "role", "add", "m1", "ingress"); err != nil {
		return nil, fmt.Errorf("role add: %w\n%s", err, out)
	}
	if _, _, _, err := deployTimed(ctx, c, webSpec("1", replicas, "")); err != nil {
		return nil, fmt.Errorf("deploy version 1: %w", err)
	}
	if _, err := healthyWeb(ctx, c, replicas, "1"); err != nil {
		return nil, err
	}
	pc, err := b.startProbe(ctx, "probe-uncloud", "http://"+b.Hosts[0].Addr.String()+"/", "app.test")
	if err != nil {
		return nil, err
	}
	var out []phase
	measure := func(what string, req api.RunRequest, wantErr bool) (phase, error) {
		ok0, f0 := pc.now()
		took, rb, restored, err := deployTimed(ctx, c, req)
		if (err != nil) != wantErr {
			return phase{}, fmt.Errorf("%s: deploy error %v", what, err)
		}
		v := "2"
		if _, err := healthyWeb(ctx, c, replicas, v); err != nil {
			return phase{}, fmt.Errorf("%s: %w", what, err)
		}
		time.Sleep(time.Second) // the requests in flight at the end
		ok1, f1 := pc.now()
		p := phase{peer: "uncloud", what: what, took: took, rollback: rb, answered: ok1 - ok0, failed: f1 - f0}
		if wantErr {
			p.note = fmt.Sprintf("%d replacements undone", restored)
		}
		return p, nil
	}
	fmt.Fprintln(b.log, "uncloud: rolling update…")
	p, err := measure(fmt.Sprintf("rolling update, %d replicas", replicas), webSpec("2", replicas, ""), false)
	if err != nil {
		return nil, err
	}
	out = append(out, p)
	fmt.Fprintln(b.log, "uncloud: failure on the first replacement…")
	if p, err = measure("failure at the 1st replacement, rollback", webSpec("3", replicas, "0.0.0.0/0"), true); err != nil {
		return nil, err
	}
	out = append(out, p)
	web, err := healthyWeb(ctx, c, replicas, "2")
	if err != nil {
		return nil, err
	}
	machine, cidr := lateMachine(web)
	fmt.Fprintf(b.log, "uncloud: failure on %s, reached last…\n", machine)
	if p, err = measure("failure on the machine reached last, rollback", webSpec("4", replicas, cidr), true); err != nil {
		return nil, err
	}
	out = append(out, p)
	return out, nil
}
