package orchestrate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
)

func (e *fakeEngine) moveTag(ref, digest string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tags[ref] = digest
}

func TestPinnedDigest(t *testing.T) {
	ctx := context.Background()
	t.Run("scale-up runs the pin though the tag moved", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		r.engine.moveTag("app:1", "sha256:aaa")
		r.run(t, api.RunRequest{Name: "web", Image: "app:1", Machines: []string{"m1"}})
		r.engine.moveTag("app:1", "sha256:bbb")
		if res, err := r.o.ScaleService(ctx, "web", api.ScaleRequest{Replicas: 3}, nil); err != nil || res.Failed() > 0 {
			t.Fatalf("scale: %v %+v", err, res)
		}
		got := r.each(t, "web", func(c *record.Container) string { return c.ImageDigest })
		if want := []string{"sha256:aaa", "sha256:aaa", "sha256:aaa"}; !slices.Equal(got, want) {
			t.Errorf("digests %v, want %v", got, want)
		}
		if n := len(r.engine.ops("resolve")); n != 1 {
			t.Errorf("resolved %d times, want once (at run)", n)
		}
		for _, p := range r.engine.ops("pull") {
			if !strings.Contains(p, "app:1@sha256:aaa") {
				t.Errorf("pulled %q, want the pin", p)
			}
		}
	})
	t.Run("deploy re-resolves and rolls when the tag moved", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		r.engine.moveTag("app:1", "sha256:aaa")
		req := api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "app:1", Replicas: 2}}}
		if _, err := deploy(r, req); err != nil {
			t.Fatal(err)
		}
		evs, err := deploy(r, req)
		if err != nil || !slices.Contains(evs, "plan web unchanged") {
			t.Fatalf("same digest: %v %v, want unchanged", err, evs)
		}
		r.engine.moveTag("app:1", "sha256:bbb")
		evs, err = deploy(r, req)
		if err != nil || !slices.ContainsFunc(evs, func(e string) bool { return strings.HasPrefix(e, "plan web replace") }) {
			t.Fatalf("moved tag: %v %v, want replace", err, evs)
		}
		got := r.each(t, "web", func(c *record.Container) string { return c.ImageDigest })
		if want := []string{"sha256:bbb", "sha256:bbb"}; !slices.Equal(got, want) {
			t.Errorf("digests %v, want %v", got, want)
		}
	})
}

func TestPullFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("a failed pull starts nothing on that machine", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		r.engine.setFail("pull m2", errors.New("m2: pull app:1: unauthorized: authentication required"))
		var images []api.ImageProgress
		res, err := r.o.RunService(ctx, api.RunRequest{Name: "web", Image: "app:1", Replicas: 3}, func(e api.RunEvent) {
			if e.Image != nil {
				images = append(images, *e.Image)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.placement(t, "web"); !slices.Equal(got, []string{"m1", "m3"}) {
			t.Errorf("containers on %v, want m1 m3", got)
		}
		if res.Failed() != 1 {
			t.Fatalf("result %+v, want one failure", res)
		}
		for _, c := range res.Containers {
			if c.Error != "" && (c.Machine != "m2" || !strings.Contains(c.Error, "unauthorized")) {
				t.Errorf("failure %+v, want m2 and the registry's words", c)
			}
		}
		for _, op := range r.engine.ops("create") {
			if strings.Contains(op, "m2") {
				t.Errorf("created on m2 after its pull failed: %s", op)
			}
		}
		if !slices.ContainsFunc(images, func(u api.ImageProgress) bool { return u.Machine == "m2" && u.Status == "failed" }) {
			t.Errorf("no failed progress for m2 in %+v", images)
		}
	})
	t.Run("a refused resolution starts nothing anywhere", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		r.engine.setFail("resolve m1", errors.New("m1: the registry did not resolve \"app:1\": unauthorized"))
		_, err := r.o.RunService(ctx, api.RunRequest{Name: "web", Image: "app:1", Machines: []string{"m1", "m2"}}, nil)
		if err == nil || !strings.Contains(err.Error(), "unauthorized") {
			t.Fatalf("err = %v, want the registry's refusal", err)
		}
		if ops := r.engine.ops("create"); len(ops) > 0 {
			t.Errorf("creates: %v", ops)
		}
		if _, err := r.store.Get(ctx, record.ServicesPrefix+"web"); !errors.Is(err, crdt.ErrNotFound) {
			t.Errorf("service record after a refused run: %v", err)
		}
	})
	t.Run("bad pull policy", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		_, err := r.o.RunService(ctx, api.RunRequest{Name: "web", Image: "app:1", Pull: "sometimes"}, nil)
		if !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), `"sometimes"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("deploy stops before any change when a pull fails", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		twoReplicas(t, r)
		r.engine.setFail("pull m2", errors.New("m2: pull nginx:2: manifest unknown"))
		_, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "nginx:2", Replicas: 2}}})
		if err == nil || !strings.Contains(err.Error(), "before any change") || !strings.Contains(err.Error(), "manifest unknown") {
			t.Fatalf("err = %v", err)
		}
		if got := r.each(t, "web", func(c *record.Container) string { return c.Image }); !slices.Equal(got, []string{"nginx:1", "nginx:1"}) {
			t.Errorf("images after a halted deploy: %v", got)
		}
	})
}
