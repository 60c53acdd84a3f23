package orchestrate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
)

// threeReplicas runs web (nginx:1) as web-1, web-2, web-3 on m1, m2, m3,
// in that order, so a rollout's order is known.
func threeReplicas(t *testing.T, r *rig, u *record.UpdateConfig) {
	t.Helper()
	r.run(t, api.RunRequest{Name: "web", Image: "nginx:1", Machines: []string{"m1"}, Update: u, By: "alice@laptop"})
	for n := 2; n <= 3; n++ {
		if res, err := r.o.ScaleService(context.Background(), "web", api.ScaleRequest{Replicas: n}, nil); err != nil || res.Failed() > 0 {
			t.Fatalf("scale to %d: %v %+v", n, err, res)
		}
	}
	if got, want := r.placement(t, "web"), []string{"m1", "m2", "m3"}; !slices.Equal(got, want) {
		t.Fatalf("on %v, want %v", got, want)
	}
}

// TestRolloutFailure: the new container on m2 (the second of three
// replacements) exits; what each update_config does about it.
func TestRolloutFailure(t *testing.T) {
	for _, tc := range []struct {
		name   string
		update *record.UpdateConfig
		// errText is in the deploy's error.
		errText string
		// events must all be among the deploy's events.
		events []string
		// images are the containers' images afterwards.
		images []string
		// check looks at the engine's calls.
		check func(t *testing.T, r *rig)
	}{
		{name: "default: start-first, one at a time, rollback",
			errText: "rollout of web failed (new container web-5 on m2 exited instead of running) and rolled back: the previous version runs again on m1, m2",
			events: []string{"web created m1 web-4", "web healthy m1 web-4", "web removed m1 web-1", "web created m2 web-5",
				"web failed m2 web-5", "web rollback", "web rollback m1 web-6", "web removed m2 web-5", "web rollback m2 web-2"},
			images: []string{"nginx:1", "nginx:1", "nginx:1"},
			check: func(t *testing.T, r *rig) {
				// Start-first back too: the restored web-6 is seen
				// healthy before web-4 goes.
				restored := r.engine.index(call{"inspect", "m1", "c6", ""})
				removed := r.engine.index(call{"act", "m1", "c4", "remove"})
				if restored < 0 || removed < 0 || restored > removed {
					t.Errorf("restored one inspected at %d, new one removed at %d", restored, removed)
				}
				if slices.Contains(r.engine.ops("create"), "create m3") {
					t.Error("m3, never reached, got a container")
				}
			}},
		{name: "stop-first",
			update:  &record.UpdateConfig{Order: record.StopFirst},
			errText: "rolled back: the previous version runs again on m1, m2",
			events: []string{"web stopped m1 web-1", "web created m1 web-4", "web removed m1 web-1", "web stopped m2 web-2",
				"web failed m2 web-5", "web rollback m1 web-6", "web started m2 web-2", "web rollback m2 web-2"},
			images: []string{"nginx:1", "nginx:1", "nginx:1"},
			check: func(t *testing.T, r *rig) {
				stopped := r.engine.index(call{"act", "m1", "c1", "stop"})
				created := r.engine.index(call{"create", "m1", "", ""})
				if stopped < 0 || created < 0 || stopped > created {
					t.Errorf("stop-first: old stopped at %d, new created at %d", stopped, created)
				}
			}},
		{name: "parallelism 2",
			update:  &record.UpdateConfig{Parallelism: 2},
			errText: "rolled back: the previous version runs again on m1, m2",
			events:  []string{"web healthy m1", "web failed m2", "web rollback m1", "web rollback m2 web-2"},
			images:  []string{"nginx:1", "nginx:1", "nginx:1"},
			check: func(t *testing.T, r *rig) {
				// Both of the batch were made before the first old one went.
				removed := r.engine.index(call{"act", "m1", "c1", "remove"})
				for _, m := range []string{"m1", "m2"} {
					if c := r.engine.index(call{"create", m, "", ""}); c < 0 || c > removed {
						t.Errorf("create on %s at %d, after the first removal at %d", m, c, removed)
					}
				}
			}},
		{name: "pause keeps the halt",
			update:  &record.UpdateConfig{FailureAction: record.OnFailurePause},
			errText: "rollout of web stopped: new container web-5 on m2 exited instead of running; the old containers keep running",
			events:  []string{"web removed m1 web-1", "web failed m2 web-5", "web removed m2 web-5"},
			images:  []string{"nginx:1", "nginx:1", "nginx:2"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, newFleet(), Config{})
			threeReplicas(t, r, nil)
			r.engine.started["m2"] = [2]string{"exited", ""}
			r.engine.forget()
			evs, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:2", Replicas: 3, Update: tc.update}}})
			if err == nil || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("err = %v\nwant it to say %s", err, tc.errText)
			}
			for _, want := range tc.events {
				if !slices.ContainsFunc(evs, func(e string) bool { return strings.HasPrefix(e, want) }) {
					t.Errorf("no %q in\n%s", want, strings.Join(evs, "\n"))
				}
			}
			if slices.Contains(evs, "web done") {
				t.Errorf("a failed rollout says done")
			}
			if got := r.images(t, "web"); !slices.Equal(got, tc.images) {
				t.Errorf("images %v, want %v", got, tc.images)
			}
			if got := r.placement(t, "web"); !slices.Equal(got, []string{"m1", "m2", "m3"}) {
				t.Errorf("on %v, want one on each machine", got)
			}
			if got := r.each(t, "web", func(c *record.Container) string { return c.State }); slices.ContainsFunc(got, func(s string) bool { return s != "running" }) {
				t.Errorf("states %v: all must run", got)
			}
			if got := r.image(t, "web"); got != "nginx:1" {
				t.Errorf("service record's image %q: a failed rollout keeps the old spec", got)
			}
			vs, err := r.o.History(context.Background(), "web")
			if err != nil || len(vs) != 1 || vs[0].Image != "nginx:1" {
				t.Errorf("history %+v (%v): a failed rollout is not a version", vs, err)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

// TestRolloutBatchesAndDelay: parallelism 2 of 3 is two batches, with the
// delay between them.
func TestRolloutBatchesAndDelay(t *testing.T) {
	r := newRig(t, newFleet(), Config{})
	threeReplicas(t, r, nil)
	r.engine.forget()
	start := time.Now()
	u := &record.UpdateConfig{Parallelism: 2, Delay: 150 * time.Millisecond, Monitor: time.Millisecond}
	if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:2", Replicas: 3, Update: u}}}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("rollout took %v, less than its one delay", d)
	}
	// The third new one was made after both old ones of the first batch went.
	third := r.engine.index(call{"create", "m3", "", ""})
	for _, old := range []call{{"act", "m1", "c1", "remove"}, {"act", "m2", "c2", "remove"}} {
		if i := r.engine.index(old); i < 0 || i > third {
			t.Errorf("%v at %d, after the second batch's create at %d", old, i, third)
		}
	}
	if got := r.images(t, "web"); !slices.Equal(got, []string{"nginx:2", "nginx:2", "nginx:2"}) {
		t.Errorf("images %v", got)
	}
	svc, _ := r.o.service(context.Background(), "web")
	if svc.Update == nil || svc.Update.Parallelism != 2 {
		t.Errorf("service record's update_config %+v", svc.Update)
	}
}

// TestRolloutMonitor: a new container that is healthy and then exits
// within the monitor time fails the rollout.
func TestRolloutMonitor(t *testing.T) {
	r := newRig(t, newFleet(), Config{})
	twoReplicas(t, r)
	go func() {
		// web-3 on m1 dies 50 ms after it was made.
		time.Sleep(50 * time.Millisecond)
		r.engine.mu.Lock()
		if c := r.engine.live["c3"]; c != nil {
			c.State = "exited"
		}
		r.engine.mu.Unlock()
	}()
	u := &record.UpdateConfig{Monitor: 300 * time.Millisecond}
	_, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:2", Replicas: 2, Update: u}}})
	if err == nil || !strings.Contains(err.Error(), "after it was healthy") || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("err = %v, want an exit after healthy, rolled back", err)
	}
	if got := r.images(t, "web"); !slices.Equal(got, []string{"nginx:1", "nginx:1"}) {
		t.Errorf("images %v", got)
	}
}

func TestUpdateConfigChecked(t *testing.T) {
	r := newRig(t, newFleet(), Config{})
	for _, u := range []record.UpdateConfig{{Order: "sideways"}, {FailureAction: "retry"}, {Parallelism: -1}, {Delay: -time.Second}} {
		_, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:1", Update: &u}}})
		if !errors.Is(err, api.ErrBadRequest) {
			t.Errorf("update_config %+v: %v, want a bad request", u, err)
		}
	}
	_, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:1", Health: []string{"CMD", "true"}, HealthInterval: -time.Second}}})
	if !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), "must not be negative") {
		t.Errorf("negative health interval: %v", err)
	}
}

// TestRolloutDrains: each old container is marked draining in the state,
// and so leaves the routes, before it is stopped or removed; a machine
// whose agent has no drain action still has its container replaced.
func TestRolloutDrains(t *testing.T) {
	for _, order := range []string{record.StartFirst, record.StopFirst} {
		t.Run(order, func(t *testing.T) {
			r := newRig(t, newFleet(), Config{DrainGrace: 20 * time.Millisecond})
			threeReplicas(t, r, nil)
			r.engine.forget()
			r.engine.setFail("drain m3", errors.New("unknown container action \"drain\""))
			u := &record.UpdateConfig{Order: order, Monitor: time.Millisecond}
			if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:2", Replicas: 3, Update: u}}}); err != nil {
				t.Fatal(err)
			}
			for _, old := range []struct{ m, id string }{{"m1", "c1"}, {"m2", "c2"}, {"m3", "c3"}} {
				drained := r.engine.index(call{"act", old.m, old.id, "drain"})
				removed := r.engine.index(call{"act", old.m, old.id, "remove"})
				if drained < 0 || removed < 0 || drained > removed {
					t.Errorf("%s on %s: drain at %d, remove at %d", old.id, old.m, drained, removed)
				}
				if order == record.StopFirst {
					if stopped := r.engine.index(call{"act", old.m, old.id, "stop"}); stopped < drained {
						t.Errorf("%s on %s stopped at %d, before its drain at %d", old.id, old.m, stopped, drained)
					}
				}
			}
			r.engine.mu.Lock()
			defer r.engine.mu.Unlock()
			if order == record.StartFirst {
				// Stop-first removes a stopped container, whose record
				// says exited, not draining.
				for id, want := range map[string]bool{"c1": true, "c2": true, "c3": false} {
					if got := r.engine.drainedAtRemove[id]; got != want {
						t.Errorf("%s's record said draining=%v when removed, want %v", id, got, want)
					}
				}
			}
		})
	}
}
