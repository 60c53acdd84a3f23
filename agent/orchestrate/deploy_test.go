package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
)

// twoReplicas runs web (nginx:1) as web-1 on m1 and web-2 on m2, in that
// order, so a rollout's order is known.
func twoReplicas(t *testing.T, r *rig) {
	t.Helper()
	r.run(t, api.RunRequest{Name: "web", Image: "nginx:1", Machines: []string{"m1"}})
	if res, err := r.o.ScaleService(context.Background(), "web", api.ScaleRequest{Replicas: 2}, nil); err != nil || res.Failed() > 0 {
		t.Fatalf("scale to 2: %v %+v", err, res)
	}
	if got, want := r.containers(t, "web"), []string{"web-1", "web-2"}; !slices.Equal(got, want) {
		t.Fatalf("containers %v, want %v", got, want)
	}
	if got, want := r.placement(t, "web"), []string{"m1", "m2"}; !slices.Equal(got, want) {
		t.Fatalf("on %v, want %v", got, want)
	}
}

// deploy runs a deploy and returns its events as "action machine container",
// plan lines first with "plan " before them.
func deploy(r *rig, req api.DeployRequest) ([]string, error) {
	var evs []string
	err := r.o.Deploy(context.Background(), req, func(e api.DeployEvent) error {
		if e.Action == "image" { // pull progress: pull_test.go looks at it
			return nil
		}
		s := strings.TrimSpace(fmt.Sprintf("%s %s %s %s", e.Service, e.Action, e.Machine, e.Container))
		if e.Plan {
			s = "plan " + s
		}
		evs = append(evs, s)
		return nil
	})
	return evs, err
}

// image is the image of the service's record.
func (r *rig) image(t *testing.T, service string) string {
	t.Helper()
	spec, _ := r.spec(t, service)
	return spec.Image
}

// images are the images of the service's containers, sorted.
func (r *rig) images(t *testing.T, service string) []string {
	t.Helper()
	return r.each(t, service, func(c *record.Container) string { return c.Image })
}

func TestDeployRollout(t *testing.T) {
	r := newRig(t, newFleet(), Config{})
	twoReplicas(t, r)
	evs, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:2", Replicas: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"plan web replace m1 web-1",
		"plan web replace m2 web-2",
		"web created m1 web-3",
		"web healthy m1 web-3",
		"web removed m1 web-1",
		"web created m2 web-4",
		"web healthy m2 web-4",
		"web removed m2 web-2",
		"web done",
	}
	if !slices.Equal(evs, want) {
		t.Errorf("events\n%s\nwant\n%s", strings.Join(evs, "\n"), strings.Join(want, "\n"))
	}
	// Start-first: each new one was seen healthy before its old one went.
	for _, step := range []struct{ m, newID, oldID string }{{"m1", "c3", "c1"}, {"m2", "c4", "c2"}} {
		healthy := r.engine.index(call{"inspect", step.m, step.newID, ""})
		removed := r.engine.index(call{"act", step.m, step.oldID, "remove"})
		if healthy < 0 || removed < 0 || healthy > removed {
			t.Errorf("on %s: inspect of the new one at %d, removal of the old one at %d", step.m, healthy, removed)
		}
	}
	if got, want := r.containers(t, "web"), []string{"web-3", "web-4"}; !slices.Equal(got, want) {
		t.Errorf("containers %v, want %v", got, want)
	}
	if got := r.images(t, "web"); !slices.Equal(got, []string{"nginx:2", "nginx:2"}) {
		t.Errorf("images %v", got)
	}
	if got := r.image(t, "web"); got != "nginx:2" {
		t.Errorf("service record's image %q, want nginx:2", got)
	}

	// The same file again changes nothing.
	calls := len(r.engine.ops("create")) + len(r.engine.ops("act"))
	evs, err = deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:2", Replicas: 2}}})
	if err != nil || !slices.Equal(evs, []string{"plan web unchanged", "web done"}) {
		t.Errorf("second deploy: %v %q", err, evs)
	}
	if n := len(r.engine.ops("create")) + len(r.engine.ops("act")); n != calls {
		t.Errorf("second deploy made %d engine calls", n-calls)
	}
}

// TestDeployRolloutHalts: with failure_action pause, a failure stops the
// rollout where it is, old and new mixed.
func TestDeployRolloutHalts(t *testing.T) {
	down := errors.New("Docker is not available on m2: connection refused")
	for _, tc := range []struct {
		name    string
		cfg     Config
		started map[string][2]string // state and health of new containers, by machine
		fail    map[string]error
		errText string
		event   string   // the failed event
		left    []string // containers afterwards
		image   []string // their images
	}{
		{name: "new container exits on the second machine",
			started: map[string][2]string{"m2": {"exited", ""}},
			errText: "rollout of web stopped: new container web-4 on m2 exited instead of running; the old containers keep running",
			event:   "web failed m2 web-4",
			left:    []string{"web-2", "web-3"}, image: []string{"nginx:1", "nginx:2"}},
		{name: "new container cannot be created",
			fail:    map[string]error{"create m2": down},
			errText: "rollout of web stopped: " + down.Error() + "; the old containers keep running",
			event:   "web failed m2",
			left:    []string{"web-2", "web-3"}, image: []string{"nginx:1", "nginx:2"}},
		{name: "new container unhealthy",
			started: map[string][2]string{"m1": {"running", "unhealthy"}},
			errText: "rollout of web stopped: new container web-3 on m1 is unhealthy; the old containers keep running",
			event:   "web failed m1 web-3",
			left:    []string{"web-1", "web-2"}, image: []string{"nginx:1", "nginx:1"}},
		{name: "health timeout",
			cfg:     Config{HealthyTimeout: 150 * time.Millisecond, HealthPoll: 10 * time.Millisecond},
			started: map[string][2]string{"m1": {"running", "starting"}},
			errText: "rollout of web stopped: new container web-3 on m1 not healthy within 150ms (state running, health starting); the old containers keep running",
			event:   "web failed m1 web-3",
			left:    []string{"web-1", "web-2"}, image: []string{"nginx:1", "nginx:1"}},
		{name: "old machine unreachable",
			fail:    map[string]error{},
			errText: "rollout of web stopped: web-2's machine m2 is unreachable; the old containers keep running",
			event:   "web failed m2 web-2",
			left:    []string{"web-2", "web-3"}, image: []string{"nginx:1", "nginx:2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, newFleet(), tc.cfg)
			twoReplicas(t, r)
			for m, st := range tc.started {
				r.engine.started[m] = st
			}
			for k, err := range tc.fail {
				r.engine.setFail(k, err)
			}
			if tc.name == "old machine unreachable" {
				r.fleet.set("m2", "down")
			}
			pause := &record.UpdateConfig{FailureAction: record.OnFailurePause}
			evs, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:2", Replicas: 2, Update: pause}}})
			if err == nil || err.Error() != tc.errText {
				t.Fatalf("err = %v\nwant %s", err, tc.errText)
			}
			if !slices.Contains(evs, tc.event) {
				t.Errorf("no %q in\n%s", tc.event, strings.Join(evs, "\n"))
			}
			if slices.Contains(evs, "web done") {
				t.Errorf("a halted rollout says done:\n%s", strings.Join(evs, "\n"))
			}
			if got := r.containers(t, "web"); !slices.Equal(got, tc.left) {
				t.Errorf("containers %v, want %v", got, tc.left)
			}
			if got := r.images(t, "web"); !slices.Equal(got, tc.image) {
				t.Errorf("images %v, want %v", got, tc.image)
			}
			if got := r.image(t, "web"); got != "nginx:1" {
				t.Errorf("service record's image %q: a halted rollout keeps the old spec", got)
			}
		})
	}
}

func TestDeployWithoutHealthCheckSettles(t *testing.T) {
	r := newRig(t, newFleet(), Config{Settle: 30 * time.Millisecond, HealthPoll: 10 * time.Millisecond})
	twoReplicas(t, r)
	r.engine.started["m1"] = [2]string{"running", ""}
	r.engine.started["m2"] = [2]string{"running", ""}
	if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:2", Replicas: 2}}}); err != nil {
		t.Fatal(err)
	}
	if n := len(r.engine.ops("inspect")); n < 4 {
		t.Errorf("%d inspections: a container without a health check must be seen running twice, a settle time apart", n)
	}
	if got := r.images(t, "web"); !slices.Equal(got, []string{"nginx:2", "nginx:2"}) {
		t.Errorf("images %v", got)
	}
}

func TestDeployPlan(t *testing.T) {
	files := []api.RunRequest{
		{Name: "web", Image: "nginx:1", Replicas: 1}, // same spec, one fewer
		{Name: "api", Image: "app:1", Replicas: 2},   // new
		{Name: "agent", Image: "busybox", Mode: "global"},
	}
	wantPlan := []string{
		"plan web remove m2 web-2",
		// The emptiest machines first: m3 has nothing, m1 and m2 one web each.
		"plan api create m3",
		"plan api create m1",
		"plan agent create m2",
		"plan agent create m3",
		"plan agent create m1",
	}
	t.Run("dry run changes nothing", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		twoReplicas(t, r)
		creates, acts := len(r.engine.ops("create")), len(r.engine.ops("act"))
		evs, err := deploy(r, api.DeployRequest{Services: files, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(evs, wantPlan) {
			t.Errorf("plan\n%s\nwant\n%s", strings.Join(evs, "\n"), strings.Join(wantPlan, "\n"))
		}
		if len(r.engine.ops("create")) != creates || len(r.engine.ops("act")) != acts {
			t.Errorf("a dry run called the engine: %v", r.engine.calls)
		}
		if r.hasService(t, "api") || r.hasService(t, "agent") {
			t.Error("a dry run wrote service records")
		}
		if got := r.containers(t, "web"); !slices.Equal(got, []string{"web-1", "web-2"}) {
			t.Errorf("web after a dry run: %v", got)
		}
	})
	t.Run("applied", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		twoReplicas(t, r)
		evs, err := deploy(r, api.DeployRequest{Services: files})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(evs[:len(wantPlan)], wantPlan) {
			t.Errorf("plan\n%s", strings.Join(evs, "\n"))
		}
		for _, c := range []struct {
			service string
			want    []string
		}{{"web", []string{"m1"}}, {"api", []string{"m1", "m3"}}, {"agent", []string{"m1", "m2", "m3"}}} {
			if got := r.placement(t, c.service); !slices.Equal(got, c.want) {
				t.Errorf("%s on %v, want %v", c.service, got, c.want)
			}
			if !r.hasService(t, c.service) {
				t.Errorf("no service record of %s", c.service)
			}
		}
	})
	for _, tc := range []struct {
		name    string
		req     api.DeployRequest
		wantErr error
		errText string
	}{
		{"nothing to deploy", api.DeployRequest{}, api.ErrBadRequest, "no services to deploy"},
		{"bad mode", api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx", Mode: "all"}}},
			api.ErrBadRequest, `service web: mode "all" is not replicated or global`},
		{"unknown machine", api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx", Machines: []string{"mx"}}}},
			api.ErrBadRequest, `service web: bad request: unknown machine "mx"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, newFleet(), Config{})
			evs, err := deploy(r, tc.req)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("err = %v, want %v with %q", err, tc.wantErr, tc.errText)
			}
			if len(evs) > 0 || len(r.engine.ops("create")) > 0 {
				t.Errorf("an invalid deploy went on: %v %v", evs, r.engine.calls)
			}
			recs, _ := r.store.List(context.Background(), record.ServicesPrefix)
			if len(recs) > 0 {
				t.Errorf("records after an invalid deploy: %v", recs)
			}
		})
	}
}

// TestDeployAllowFrom: a deploy changes a service's security group in
// its record, says so in the plan, and leaves the containers alone when
// nothing else changed; a bad entry is refused before anything happens.
func TestDeployAllowFrom(t *testing.T) {
	r := newRig(t, newFleet(), Config{})
	r.run(t, api.RunRequest{Name: "db", Image: "pg:1", AllowFrom: []string{"web"}})
	svc, err := r.o.service(context.Background(), "db")
	if err != nil || !slices.Equal(svc.AllowFrom, []string{"web"}) {
		t.Fatalf("run wrote allow_from %v (%v), want [web]", svc.AllowFrom, err)
	}
	creates := len(r.engine.ops("create"))
	evs, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "db", Image: "pg:1", AllowFrom: []string{"web", "machine:m2"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(evs, "plan db allow-from") {
		t.Errorf("plan lacks the allow-from change: %v", evs)
	}
	if len(r.engine.ops("create")) != creates {
		t.Errorf("a policy change recreated containers: %v", r.engine.calls)
	}
	svc, _ = r.o.service(context.Background(), "db")
	if !slices.Equal(svc.AllowFrom, []string{"web", "machine:m2"}) {
		t.Errorf("allow_from after deploy %v", svc.AllowFrom)
	}
	_, err = deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "db", Image: "pg:1", AllowFrom: []string{"10.0.0.0/8"}}}})
	if !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), "is not a service or machine name") {
		t.Errorf("bad allow-from: %v", err)
	}
	if _, err := r.o.RunService(context.Background(), api.RunRequest{Name: "x", Image: "pg:1", AllowFrom: []string{"group:a"}}, nil); !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("run with a bad allow-from: %v", err)
	}
}
