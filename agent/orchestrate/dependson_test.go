package orchestrate

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

func TestDeployDependsOn(t *testing.T) {
	fast := Config{Settle: 20 * time.Millisecond, HealthPoll: 5 * time.Millisecond, HealthyTimeout: 300 * time.Millisecond}
	index := func(evs []string, prefix string) int {
		return slices.IndexFunc(evs, func(e string) bool { return strings.HasPrefix(e, prefix) })
	}
	t.Run("dependencies first, healthy before the dependent starts", func(t *testing.T) {
		r := newRig(t, newFleet(), fast)
		evs, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{
			{Name: "web", Image: "web:1", DependsOn: map[string]string{"db": dependHealthy, "cache": dependStarted}},
			{Name: "db", Image: "db:1", Health: []string{"CMD", "probe"}},
			{Name: "cache", Image: "cache:1"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		db, cache, wait, web := index(evs, "db created"), index(evs, "cache created"), index(evs, "web waiting"), index(evs, "web created")
		if db < 0 || cache < 0 || wait < 0 || web < 0 || !(db < wait && cache < web && wait < web) {
			t.Errorf("order wrong (db %d, cache %d, wait %d, web %d):\n%s", db, cache, wait, web, strings.Join(evs, "\n"))
		}
	})
	t.Run("an unhealthy dependency stops the dependent", func(t *testing.T) {
		r := newRig(t, newFleet(), fast)
		r.engine.started = map[string][2]string{"m1": {"running", "unhealthy"}, "m2": {"running", "unhealthy"}, "m3": {"running", "unhealthy"}}
		_, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{
			{Name: "db", Image: "db:1", Health: []string{"CMD", "probe"}},
			{Name: "web", Image: "web:1", DependsOn: map[string]string{"db": dependHealthy}},
		}})
		if err == nil || !strings.Contains(err.Error(), "dependency db is not healthy") {
			t.Fatalf("err = %v", err)
		}
		if got := r.containers(t, "web"); len(got) != 0 {
			t.Errorf("web started: %v", got)
		}
	})
	for _, tc := range []struct {
		name string
		svcs []api.RunRequest
		want string
	}{
		{"cycle", []api.RunRequest{
			{Name: "a", Image: "a", DependsOn: map[string]string{"b": ""}},
			{Name: "b", Image: "b", DependsOn: map[string]string{"a": ""}}}, "cycle: a -> b -> a"},
		{"unknown dependency", []api.RunRequest{{Name: "a", Image: "a", DependsOn: map[string]string{"nosuch": ""}}},
			"neither in this deploy nor a service"},
		{"bad condition", []api.RunRequest{{Name: "a", Image: "a", DependsOn: map[string]string{"a": "whenever"}}},
			`condition "whenever"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, newFleet(), fast)
			_, err := deploy(r, api.DeployRequest{Services: tc.svcs})
			if !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if ops := r.engine.ops("create"); len(ops) > 0 {
				t.Errorf("created before refusing: %v", ops)
			}
		})
	}
}

// A deploy of many one-replica services spreads them over the machines:
// each service's placement counts what the services before it planned.
func TestDeploySpreadsServices(t *testing.T) {
	r := newRig(t, newFleet(), Config{Settle: time.Millisecond, HealthPoll: time.Millisecond})
	var svcs []api.RunRequest
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		svcs = append(svcs, api.RunRequest{Name: n, Image: n + ":1"})
	}
	if _, err := deploy(r, api.DeployRequest{Services: svcs}); err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, s := range svcs {
		for _, m := range r.placement(t, s.Name) {
			per[m]++
		}
	}
	if per["m1"] != 2 || per["m2"] != 2 || per["m3"] != 2 {
		t.Errorf("containers per machine %v, want 2 each", per)
	}
}

// TestDeployFailedDependency: a service whose dependency failed to deploy
// is not started, and a service that depends on nothing still is.
func TestDeployFailedDependency(t *testing.T) {
	r := newRig(t, newFleet(), Config{})
	r.engine.setFail("create m1", errors.New("m1's engine says no"))
	_, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{
		{Name: "a", Image: "x:1", Machines: []string{"m1"}},
		{Name: "b", Image: "x:1", Machines: []string{"m2"}, DependsOn: map[string]string{"a": "service_started"}},
		{Name: "c", Image: "x:1", Machines: []string{"m2"}},
	}})
	if err == nil || !strings.Contains(err.Error(), "its dependency a failed") {
		t.Fatalf("deploy with a failing a: %v, want b refused for its dependency", err)
	}
	if got := r.containers(t, "b"); len(got) != 0 {
		t.Errorf("b started although its dependency failed: %v", got)
	}
	if got := r.containers(t, "c"); len(got) != 1 {
		t.Errorf("c, which depends on nothing, has %v, want one container", got)
	}
}
