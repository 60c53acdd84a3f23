package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
)

// TestHistoryKeepsTheLastTen: a run and 12 deploys of new images are 13
// versions, of which the last 10 stay, newest first; a deploy that
// changes nothing adds none.
func TestHistoryKeepsTheLastTen(t *testing.T) {
	r := newRig(t, newFleet(), Config{})
	r.run(t, api.RunRequest{Name: "web", Image: "nginx:0", By: "alice@laptop"})
	for i := 1; i <= 12; i++ {
		req := api.DeployRequest{By: "bob@desk", Services: []api.RunRequest{{Name: "web", Image: fmt.Sprintf("nginx:%d", i)}}}
		if _, err := deploy(r, req); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:12"}}}); err != nil {
		t.Fatal(err)
	}
	vs, err := r.o.History(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != record.HistoryKeep {
		t.Fatalf("%d versions, want %d", len(vs), record.HistoryKeep)
	}
	for i, v := range vs {
		if want := 13 - i; v.N != want || v.Image != fmt.Sprintf("nginx:%d", want-1) {
			t.Errorf("version %d is N=%d %s, want N=%d nginx:%d", i, v.N, v.Image, want, want-1)
		}
		if v.Action != "deploy" || v.User != "bob@desk" || v.Machine != "m1" || v.Time.IsZero() {
			t.Errorf("version %d: %+v", v.N, v)
		}
		if v.Digest != "sha256:"+v.Image {
			t.Errorf("version %d digest %q", v.N, v.Digest)
		}
		if v.Current != (i == 0) {
			t.Errorf("version %d current=%v", v.N, v.Current)
		}
	}
	if _, err := r.o.RemoveService(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.o.History(context.Background(), "web"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("history after rm: %v, want not found", err)
	}
}

// TestRollbackCommand: rollback deploys the previous version with its
// own pin (a tag that moved since does not matter), start-first, and is
// itself a version; --to picks one; what cannot be done is refused.
func TestRollbackCommand(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, newFleet(), Config{})
	twoReplicas(t, r)
	if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:2", Replicas: 2}}}); err != nil {
		t.Fatal(err)
	}
	r.engine.tags["nginx:1"] = "sha256:moved" // the tag moved since version 1
	r.engine.forget()
	var evs []string
	err := r.o.Rollback(ctx, "web", api.RollbackRequest{By: "carol@ops"}, func(e api.DeployEvent) error {
		evs = append(evs, fmt.Sprintf("%s %s %s", e.Action, e.Machine, e.Container))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.images(t, "web"); !slices.Equal(got, []string{"nginx:1", "nginx:1"}) {
		t.Errorf("images after rollback %v", got)
	}
	if n := len(r.engine.ops("resolve")); n != 0 {
		t.Errorf("a rollback resolved the tag again (%d times): it must run the version's pin", n)
	}
	for id, pin := range r.engine.pins {
		if id == "c5" || id == "c6" {
			if pin != "nginx:1@sha256:nginx:1" {
				t.Errorf("restored container %s runs %s, want the version's pin", id, pin)
			}
		}
	}
	healthy := r.engine.index(call{"inspect", "m1", "c5", ""})
	removed := r.engine.index(call{"act", "m1", "c3", "remove"})
	if healthy < 0 || removed < 0 || healthy > removed {
		t.Errorf("not start-first: new one inspected at %d, old one removed at %d\n%v", healthy, removed, evs)
	}
	vs, err := r.o.History(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 || vs[0].Action != "rollback" || vs[0].RollbackOf != 1 || vs[0].User != "carol@ops" || vs[0].Image != "nginx:1" || !vs[0].Current {
		t.Errorf("history after rollback: %+v", vs)
	}

	// --to 2 goes forward again.
	if err := r.o.Rollback(ctx, "web", api.RollbackRequest{To: 2}, func(api.DeployEvent) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := r.images(t, "web"); !slices.Equal(got, []string{"nginx:2", "nginx:2"}) {
		t.Errorf("images after rollback --to 2: %v", got)
	}

	for _, tc := range []struct {
		name, service string
		to            int
		want          error
	}{
		{"no such version", "web", 99, api.ErrBadRequest},
		{"no such service", "api", 0, api.ErrNotFound},
	} {
		err := r.o.Rollback(ctx, tc.service, api.RollbackRequest{To: tc.to}, func(api.DeployEvent) error { return nil })
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	r.run(t, api.RunRequest{Name: "db", Image: "pg:1"})
	err = r.o.Rollback(ctx, "db", api.RollbackRequest{}, func(api.DeployEvent) error { return nil })
	if !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("rollback of a service with one version: %v", err)
	}
}

// TestHistoryOfAnOlderService: a service run before histories existed
// gets its spec recorded as the first version by its next deploy, so it
// can be rolled back to.
func TestHistoryOfAnOlderService(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, newFleet(), Config{})
	r.run(t, api.RunRequest{Name: "web", Image: "nginx:1"})
	if err := r.store.Delete(ctx, record.HistoryPrefix+"web"); err != nil {
		t.Fatal(err)
	}
	if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:2"}}}); err != nil {
		t.Fatal(err)
	}
	vs, err := r.o.History(ctx, "web")
	if err != nil || len(vs) != 2 || vs[1].Image != "nginx:1" || vs[0].Image != "nginx:2" {
		t.Fatalf("history %+v (%v)", vs, err)
	}
	if err := r.o.Rollback(ctx, "web", api.RollbackRequest{}, func(api.DeployEvent) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := r.images(t, "web"); !slices.Equal(got, []string{"nginx:1"}) {
		t.Errorf("images after rollback %v", got)
	}
}
