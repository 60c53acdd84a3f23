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

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestProjects: a service of the default project (made with run, as
// before projects) and two Compose projects that each have a db and a
// web run side by side on two machines. Each project's web reaches its
// own db as db.internal and the others by <service>.<project>.internal;
// ls groups by project; --remove-orphans and rm --project touch only
// their project; the default project's db is never restarted.
func TestProjects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c := newContainerLab(ctx, t, withDocker, withDocker)
	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag); err != nil {
		t.Fatalf("image push: %v\n%s", err, out)
	}
	if out, err := c.uncloud(ctx, t, 0, "run", "--name", "db", "-m", "m1", "--pull", "never", testimage.Tag); err != nil {
		t.Fatalf("run db: %v\n%s", err, out)
	}
	defaultDB := c.running(ctx, t, 0, "db", 1)[0]

	dir := t.TempDir()
	file := func(t *testing.T, services ...string) string {
		t.Helper()
		var b strings.Builder
		b.WriteString("services:\n")
		for _, s := range services {
			fmt.Fprintf(&b, "  %s:\n    image: %s\n    pull_policy: never\n    expose: [\"8080\"]\n", s, testimage.Tag)
		}
		path := filepath.Join(dir, fmt.Sprintf("compose-%s.yaml", strings.Join(services, "-")))
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	both := file(t, "db", "web")
	for _, p := range []string{"blog", "shop"} {
		if out, err := c.uncloud(ctx, t, 0, "deploy", "-p", p, "-f", both); err != nil {
			t.Fatalf("deploy -p %s: %v\n%s", p, err, out)
		}
	}
	for _, id := range []string{"db.blog", "web.blog", "db.shop", "web.shop"} {
		c.running(ctx, t, 0, id, 1)
	}

	if !t.Run("ls groups by project, the default first; bare names resolve where they are unique", func(t *testing.T) {
		var ss []api.ServiceInfo
		if err := c.ucJSON(ctx, t, 1, &ss, "ls", "-o", "json"); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range ss {
			got = append(got, s.Project+"/"+s.Name)
		}
		if want := []string{"default/db", "blog/db.blog", "blog/web.blog", "shop/db.shop", "shop/web.shop"}; !slices.Equal(got, want) {
			t.Errorf("ls: %v, want %v", got, want)
		}
		out, err := c.uncloud(ctx, t, 0, "ls")
		if err != nil || !strings.Contains(out, "PROJECT") || !strings.Contains(out, "db.blog") {
			t.Errorf("ls table: %v\n%s", err, out)
		}
		// web is in two projects: a bare name is ambiguous, and says so.
		out, err = c.uncloud(ctx, t, 0, "scale", "web", "2")
		if err == nil || !strings.Contains(err.Error()+out, "web.blog, web.shop") {
			t.Errorf("scale web with two projects' web: %v\n%s", err, out)
		}
	}) {
		return
	}

	get := func(t *testing.T, from, url, wantHost string) {
		t.Helper()
		eventuallyE2E(t, from+" reaches "+url, 45*time.Second, func() error {
			out, err := c.uncloud(ctx, t, 1, "exec", from, "/echoserver", "get", url)
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.Contains(out, "host="+wantHost) {
				return fmt.Errorf("answer %q, want host=%s…", strings.TrimSpace(out), wantHost)
			}
			return nil
		})
	}
	if !t.Run("each project's web reaches its own db as db.internal, the others by full name", func(t *testing.T) {
		get(t, "web.blog", "http://db.internal:8080/", "blog-db-")
		get(t, "web.shop", "http://db.internal:8080/", "shop-db-")
		get(t, "web.blog", "http://db.shop.internal:8080/", "shop-db-")
		get(t, "web.shop", "http://db.default.internal:8080/", "db-")
		get(t, "db", "http://db.internal:8080/", "db-") // the default project's own
		// From a machine (no project): the default project's db.
		m2 := ""
		for _, m := range c.machines(ctx, t, 1) {
			if m.Name == "m2" {
				m2 = m.Address
			}
		}
		waitDig(ctx, t, c.hosts[1], m2, "db.internal", "A", []string{defaultDB.Address}, 30*time.Second)
	}) {
		return
	}

	t.Run("--remove-orphans removes blog's web only; rm --project shop removes shop only", func(t *testing.T) {
		out, err := c.uncloud(ctx, t, 0, "deploy", "-p", "blog", "-f", file(t, "db"))
		if err != nil || !strings.Contains(out, "orphan web.blog") {
			t.Errorf("deploy without web: %v\n%s", err, out)
		}
		c.running(ctx, t, 0, "web.blog", 1)
		out, err = c.uncloud(ctx, t, 0, "deploy", "-p", "blog", "--remove-orphans", "-f", file(t, "db"))
		if err != nil || !strings.Contains(out, "removed web.blog") {
			t.Errorf("deploy --remove-orphans: %v\n%s", err, out)
		}
		c.running(ctx, t, 0, "web.blog", 0)
		c.running(ctx, t, 0, "web.shop", 1)
		if out, err := c.uncloud(ctx, t, 0, "rm", "--project", "shop"); err != nil {
			t.Fatalf("rm --project shop: %v\n%s", err, out)
		}
		var ss []api.ServiceInfo
		if err := c.ucJSON(ctx, t, 0, &ss, "ls", "-o", "json"); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range ss {
			got = append(got, s.Name)
		}
		if want := []string{"db", "db.blog"}; !slices.Equal(got, want) {
			t.Errorf("services after the removals: %v, want %v", got, want)
		}
		now := c.running(ctx, t, 0, "db", 1)[0]
		if now.ID != defaultDB.ID {
			t.Errorf("the default project's db was replaced (%s, was %s)", now.ID, defaultDB.ID)
		}
	})
}
