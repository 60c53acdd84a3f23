package orchestrate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
)

// TestProjects: two projects and the default one each have a db; deploys
// name them <name>.<project>; a bare name finds the one service of that
// name or says which are there; orphans are listed, and removed only
// when asked, never in the default project.
func TestProjects(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, newFleet(), Config{})
	r.run(t, api.RunRequest{Name: "db", Image: "postgres:16"}) // the default project, as before projects
	blog := []api.RunRequest{
		{Name: "db", Image: "postgres:16", Project: "blog"},
		{Name: "web", Image: "ghost:5", Project: "blog", DependsOn: map[string]string{"db": "service_started"}, AllowFrom: []string{"db", "service:web"}},
	}
	if _, err := deploy(r, api.DeployRequest{Services: blog}); err != nil {
		t.Fatal(err)
	}
	if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "db", Image: "mysql:8", Project: "shop"}}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"db", "db.blog", "web.blog", "db.shop"} {
		if got := r.containers(t, id); len(got) != 1 {
			t.Errorf("%s has containers %v, want one", id, got)
		}
	}
	svcs, err := r.o.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, s := range svcs {
		order = append(order, s.Project+"/"+s.Name)
	}
	if want := []string{"default/db", "blog/db.blog", "blog/web.blog", "shop/db.shop"}; !slices.Equal(order, want) {
		t.Errorf("ls %v, want %v (grouped by project, the default first)", order, want)
	}
	web, err := r.o.service(ctx, "web.blog")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"db.blog", "web.blog"}; !slices.Equal(web.AllowFrom, want) {
		t.Errorf("web.blog allows %v, want the project's own services %v", web.AllowFrom, want)
	}

	// Names as typed.
	for typed, want := range map[string]string{"db": "db", "db.default": "db", "web": "web.blog", "db.shop": "db.shop", "nope": "nope"} {
		if got, err := r.o.serviceID(ctx, typed); err != nil || got != want {
			t.Errorf("serviceID(%q) = %q, %v; want %q", typed, got, err, want)
		}
	}
	r.rm(t, "db")
	if _, err := r.o.serviceID(ctx, "db"); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "db.blog, db.shop") {
		t.Errorf("db with two projects' db and no default one: %v, want a conflict naming both", err)
	}
	if _, err := r.o.ScaleService(ctx, "db", api.ScaleRequest{Replicas: 2}, nil); !errors.Is(err, api.ErrConflict) {
		t.Errorf("scale db, ambiguous: %v", err)
	}
	if res, err := r.o.ScaleService(ctx, "web", api.ScaleRequest{Replicas: 2}, nil); err != nil || res.Failed() > 0 {
		t.Errorf("scale web (blog's alone): %v %+v", err, res)
	}

	// blog without web: web is an orphan, removed only with --remove-orphans.
	evs, err := deploy(r, api.DeployRequest{Services: blog[:1]})
	if err != nil || !slices.Contains(evs, "plan web.blog orphan") {
		t.Errorf("deploy without web: %v %q, want web.blog listed as an orphan", err, evs)
	}
	if got := r.containers(t, "web.blog"); len(got) != 2 {
		t.Errorf("web.blog has %v after a deploy without --remove-orphans, want its two containers", got)
	}
	evs, err = deploy(r, api.DeployRequest{Services: blog[:1], RemoveOrphans: true})
	if err != nil || !slices.Contains(evs, "plan web.blog remove") || !slices.Contains(evs, "web.blog removed") {
		t.Errorf("deploy --remove-orphans: %v %q", err, evs)
	}
	if _, err := r.o.service(ctx, "web.blog"); err == nil || len(r.containers(t, "web.blog")) > 0 {
		t.Error("web.blog still there after --remove-orphans")
	}
	if _, err := r.o.service(ctx, "db.shop"); err != nil {
		t.Errorf("another project's service went with blog's orphans: %v", err)
	}

	// The default project has no orphans to remove.
	r.run(t, api.RunRequest{Name: "cache", Image: "redis:7"})
	if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "other", Image: "nginx:1"}}, RemoveOrphans: true}); !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("--remove-orphans in the default project: %v, want refused", err)
	}
	for _, bad := range []api.DeployRequest{
		{Services: []api.RunRequest{{Name: "a", Image: "x", Project: "p"}, {Name: "b", Image: "x", Project: "q"}}},
		{Services: []api.RunRequest{{Name: "a.b", Image: "x", Project: "p"}}},
		{Services: []api.RunRequest{{Name: "a", Image: "x", Project: "machine"}}},
		{Services: []api.RunRequest{{Name: "a", Image: "x", Project: "Bad_Name"}}},
	} {
		if _, err := deploy(r, bad); !errors.Is(err, api.ErrBadRequest) {
			t.Errorf("deploy %+v: %v, want a bad request", bad.Services, err)
		}
	}
}

func (r *rig) rm(t *testing.T, service string) {
	t.Helper()
	if res, err := r.o.RemoveService(context.Background(), service); err != nil || res.Failed() > 0 {
		t.Fatalf("rm %s: %v %+v", service, err, res)
	}
}
