package e2e

// The checks of TestComposeCorpusDeploys (compose_corpus_test.go): what
// a deployed corpus project must be.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// serviceID is the name ls, ps, exec and rm know the file's service svc
// by: svc, or svc.PROJECT once services belong to projects.
func serviceID(project, svc string, names []string) (string, bool) {
	for _, n := range names {
		if n == svc || n == svc+"."+project {
			return n, true
		}
	}
	return "", false
}

// checkSharedVolumes: a named volume that several services of the
// project mount is one machine's Docker volume, so those services must
// share a machine (a replicated one may have more, each with its own
// volume), as they share the volume under Compose.
func (cc *corpusCheck) checkSharedVolumes(ctx context.Context, t *testing.T) {
	t.Helper()
	users := map[string]map[string]map[string]bool{} // volume -> service -> machines
	for svc, cs := range cc.byService {
		for _, ci := range cs {
			raw, err := cc.c.engines[machineIndex(t, ci.Machine)].Client.ContainerInspect(ctx, ci.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range raw.Mounts {
				if m.Type != "volume" {
					continue
				}
				if users[m.Name] == nil {
					users[m.Name] = map[string]map[string]bool{}
				}
				if users[m.Name][svc] == nil {
					users[m.Name][svc] = map[string]bool{}
				}
				users[m.Name][svc][ci.Machine] = true
			}
		}
	}
	for v, bySvc := range users {
		if len(bySvc) < 2 {
			continue
		}
		var common map[string]bool
		for _, ms := range bySvc {
			if common == nil {
				common = maps.Clone(ms)
				continue
			}
			maps.DeleteFunc(common, func(m string, _ bool) bool { return !ms[m] })
		}
		if len(common) == 0 {
			t.Errorf("volume %s is mounted by services on no common machine (%v): they do not share its data as under Compose", v, bySvc)
		}
	}
}

// waitRunning waits until every service of the project has its replicas
// running (and healthy, where it has a health check) and no other
// service of the project exists, and notes their IDs and containers.
func (cc *corpusCheck) waitRunning(ctx context.Context, t *testing.T) {
	t.Helper()
	c, d, project := cc.c, cc.d, cc.facts.Project
	eventuallyE2E(t, "every service of "+project+" running and healthy", 90*time.Second, func() error {
		var services []api.ServiceInfo
		if err := c.ucJSON(ctx, t, 1, &services, "ls", "-o", "json"); err != nil {
			return err
		}
		var names []string
		for _, s := range services {
			if s.Project == project {
				names = append(names, s.Name)
			}
		}
		cc.ids = map[string]string{}
		for svc := range d.services {
			id, ok := serviceID(project, svc, names)
			if !ok {
				return fmt.Errorf("no service %s of project %s in ls: %v", svc, project, names)
			}
			cc.ids[svc] = id
		}
		if len(names) != len(d.services) {
			return fmt.Errorf("project %s has services %v, want %d", project, names, len(d.services))
		}
		for _, svc := range d.absent {
			if id, ok := serviceID(project, svc, names); ok {
				t.Fatalf("service %s runs, but its profile was not asked for", id)
			}
		}
		cc.byService = map[string][]api.ContainerInfo{}
		for _, ci := range c.ps(ctx, t, 1) {
			for svc, id := range cc.ids {
				if ci.Service == id {
					cc.byService[svc] = append(cc.byService[svc], ci)
				}
			}
		}
		for svc, s := range d.services {
			cs := cc.byService[svc]
			if len(cs) != s.replicas {
				return fmt.Errorf("%s has %d containers, want %d", svc, len(cs), s.replicas)
			}
			for _, ci := range cs {
				if ci.State != "running" || ci.Address == "" {
					return fmt.Errorf("%s is %s at %q", ci.Name, ci.State, ci.Address)
				}
				if s.health != "" && ci.Health != "healthy" {
					return fmt.Errorf("%s is %q, want healthy", ci.Name, ci.Health)
				}
				if s.health == "" && ci.Health != "" {
					t.Errorf("%s has health %q but %s has no health check", ci.Name, ci.Health, svc)
				}
				if want := mirrorRef(t, cc.reg.Addr, cc.facts.Images[svc]); ci.Image != want || ci.ImageDigest == "" {
					t.Errorf("%s runs %s (%s), want %s pinned to the registry's digest", ci.Name, ci.Image, ci.ImageDigest, want)
				}
			}
		}
		return nil
	})
}

// checkSpread: the replicas of a service are on as many machines as they
// can be. Where the project's services went is logged: the earlier
// projects still run, and placement balances all of a machine's
// containers, not one project's.
func (cc *corpusCheck) checkSpread(t *testing.T) {
	t.Helper()
	all := map[string][]string{}
	for svc, cs := range cc.byService {
		machines := map[string]bool{}
		for _, ci := range cs {
			machines[ci.Machine] = true
			all[ci.Machine] = append(all[ci.Machine], svc)
		}
		if want := min(len(cs), len(cc.c.hosts)); len(machines) != want {
			t.Errorf("%d replicas of %s on %d machines, want %d", len(cs), svc, len(machines), want)
		}
	}
	for _, svcs := range all {
		slices.Sort(svcs)
	}
	t.Logf("placement: %v", all)
}

// checkOrder: depends_on. A service_healthy dependency's health check had
// passed before any container of the dependent was created (Docker runs
// the first check one interval after the start, and its log keeps the
// last five checks), and the deploy said it waited; a service_started
// dependency had started.
func (cc *corpusCheck) checkOrder(ctx context.Context, t *testing.T, out string) {
	byService := cc.byService // by the file's service names
	t.Helper()
	for svc, s := range cc.d.services {
		for _, cond := range []struct {
			deps    []string
			healthy bool
		}{{s.after, false}, {s.healthyAfter, true}} {
			for _, dep := range cond.deps {
				for _, dc := range byService[dep] {
					raw, err := cc.c.engines[machineIndex(t, dc.Machine)].Client.ContainerInspect(ctx, dc.ID)
					if err != nil {
						t.Fatal(err)
					}
					bound, err := time.Parse(time.RFC3339Nano, raw.State.StartedAt)
					if err != nil {
						t.Fatalf("%s started at %q: %v", dc.Name, raw.State.StartedAt, err)
					}
					what := "started"
					if cond.healthy {
						what = "passed its health check"
						bound = bound.Add(raw.Config.Healthcheck.Interval)
						if h := raw.State.Health; h != nil && len(h.Log) < 5 {
							for _, r := range h.Log {
								if r.ExitCode == 0 {
									bound = r.End
									break
								}
							}
						}
					}
					for _, ci := range byService[svc] {
						if ci.Created.Before(bound) {
							t.Errorf("%s (%s) was created at %s, before its dependency %s %s (%s)", ci.Name, svc,
								ci.Created.Format(time.StampMilli), dc.Name, what, bound.Format(time.StampMilli))
						} else {
							t.Logf("%s created %v after %s %s", ci.Name, ci.Created.Sub(bound).Round(time.Millisecond), dc.Name, what)
						}
					}
				}
				if cond.healthy && !waited(out, cc.facts.Project, svc, dep) {
					t.Errorf("the deploy does not say %s waited for %s to be healthy:\n%s", svc, dep, out)
				}
			}
		}
	}
}

// waited says whether deploy's output has the line of svc waiting for
// dep's health ("  waiting app: for db: service_healthy"), the services
// named either way (see serviceID).
func waited(out, project, svc, dep string) bool {
	is := func(field, name string) bool {
		_, ok := serviceID(project, name, []string{strings.TrimSuffix(field, ":")})
		return ok
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && f[0] == "waiting" && is(f[1], svc) && f[2] == "for" && is(f[3], dep) && f[4] == "service_healthy" {
			return true
		}
	}
	return false
}

// machineIndex is the host index of machine mN.
func machineIndex(t *testing.T, machine string) int {
	var i int
	if _, err := fmt.Sscanf(machine, "m%d", &i); err != nil {
		t.Fatalf("machine %q: %v", machine, err)
	}
	return i - 1
}

// exec runs the stand-in in the first container of svc, from m2's CLI.
func (cc *corpusCheck) exec(ctx context.Context, t *testing.T, svc string, args ...string) (string, error) {
	t.Helper()
	from := cc.byService[svc][0]
	return cc.c.uncloud(ctx, t, 1, append([]string{"exec", "--container", from.Name, cc.ids[svc], "/echoserver"}, args...)...)
}

// checkReach: from a container of one service, the other's stand-in
// answers by <service>.internal and by the bare name.
func (cc *corpusCheck) checkReach(ctx context.Context, t *testing.T) {
	t.Helper()
	for _, r := range cc.d.reach {
		cc.checkReachOf(ctx, t, r[0], cc, r[1], r[2], []string{r[1] + ".internal", r[1]})
	}
}

// checkReachOf: from a container of from (a service of this project), a
// container of owner's service to answers at each host name.
func (cc *corpusCheck) checkReachOf(ctx context.Context, t *testing.T, from string, owner *corpusCheck, to, port string, hosts []string) {
	t.Helper()
	targets := map[string]string{}
	for _, ci := range owner.byService[to] {
		targets[ci.Name] = ci.Machine
	}
	began := time.Now()
	for _, host := range hosts {
		url := "http://" + host + ":" + port + "/"
		eventuallyE2E(t, from+" of "+cc.facts.Project+" reaches "+url, 30*time.Second, func() error {
			body, err := cc.exec(ctx, t, from, "get", url)
			if err != nil {
				return fmt.Errorf("%v: %s", err, body)
			}
			name := strings.TrimPrefix(strings.Fields(body)[0], "host=")
			if _, ok := targets[name]; !ok {
				return fmt.Errorf("%s answered %q, not a container of %s of %s (%v)", url, body, to, owner.facts.Project, targets)
			}
			return nil
		})
	}
	t.Logf("%s of %s (on %s) reaches %s of %s on %v as %v (%v)", from, cc.facts.Project, cc.byService[from][0].Machine,
		to, owner.facts.Project, targets, hosts, time.Since(began).Round(10*time.Millisecond))
}

// checkPublished: each published host port answers from the internet on
// every machine that runs a replica, with that replica.
func (cc *corpusCheck) checkPublished(ctx context.Context, t *testing.T) {
	t.Helper()
	for svc, s := range cc.d.services {
		for _, port := range s.published {
			for _, ci := range cc.byService[svc] {
				addr := cc.c.hosts[machineIndex(t, ci.Machine)].PublicAddr
				url := fmt.Sprintf("http://%s:%s/", addr, port)
				eventuallyE2E(t, svc+" answers on "+url, 30*time.Second, func() error {
					body, err := cc.c.fromInternet(ctx, url)
					if err != nil {
						return fmt.Errorf("%v: %s", err, body)
					}
					if !strings.Contains(body, "host="+ci.Name+" ") {
						return fmt.Errorf("%s answered %q, want %s", url, body, ci.Name)
					}
					return nil
				})
				t.Logf("%s answers on %s (%s)", ci.Name, url, ci.Machine)
			}
		}
	}
}

// checkFiles: files in containers hold the corpus's content, read through
// the stand-in's /file.
func (cc *corpusCheck) checkFiles(ctx context.Context, t *testing.T) {
	t.Helper()
	for _, f := range cc.d.files {
		svc, path, want := f[0], f[1], f[2]
		port, _, _ := strings.Cut(cc.d.services[svc].ports, ",")
		body, err := cc.exec(ctx, t, svc, "get", "http://127.0.0.1:"+port+"/file?path="+path)
		if err != nil {
			t.Errorf("%s: read %s: %v\n%s", svc, path, err, body)
			continue
		}
		if !strings.Contains(body, want) {
			t.Errorf("%s: %s holds %q, want it to hold %q", svc, path, body, want)
		}
	}
}

// checkLookups: a service's name resolves to all its containers.
func (cc *corpusCheck) checkLookups(ctx context.Context, t *testing.T) {
	t.Helper()
	for _, l := range cc.d.lookup {
		from, name := l[0], l[1]
		var want []string
		for _, ci := range cc.byService[name] {
			want = append(want, ci.Address)
		}
		slices.Sort(want)
		eventuallyE2E(t, from+" resolves "+name, 30*time.Second, func() error {
			out, err := cc.exec(ctx, t, from, "lookup", name+".internal")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if got := strings.Fields(out); !slices.Equal(got, want) {
				return fmt.Errorf("%s.internal is %v, want %v", name, got, want)
			}
			return nil
		})
	}
}

// TestCorpusDeployHelpers: the names the corpus test maps and reads,
// without a lab.
func TestCorpusDeployHelpers(t *testing.T) {
	for image, want := range map[string]string{
		"ghost:5-alpine":                             "reg:5000/library/ghost:5-alpine",
		"docker.io/library/postgres:16":              "reg:5000/library/postgres:16",
		"ghcr.io/plausible/community-edition:v2.1.4": "reg:5000/plausible/community-edition:v2.1.4",
		"docker.io/valkey/valkey:8-bookworm":         "reg:5000/valkey/valkey:8-bookworm",
	} {
		if got := mirrorRef(t, "reg:5000", image); got != want {
			t.Errorf("mirrorRef(%q) = %q, want %q", image, got, want)
		}
	}
	for _, tc := range []struct {
		out  string
		want bool
	}{
		{"  waiting app: for db: service_healthy\n", true},
		{"  waiting app.filesync: for db.filesync: service_healthy\n", true},
		{"  waiting app: for db_x: service_healthy\n", false},
		{"  waiting cron: for db: service_healthy\n", false},
		{"  waiting app: for db: service_completed_successfully\n", false},
		{"  created app app-1 on m1\n", false},
	} {
		if got := waited(tc.out, "filesync", "app", "db"); got != tc.want {
			t.Errorf("waited(%q) = %v, want %v", tc.out, got, tc.want)
		}
	}
	if id, ok := serviceID("blog", "db", []string{"web", "db.blog"}); !ok || id != "db.blog" {
		t.Errorf("serviceID in a project: %q %v", id, ok)
	}
	if _, ok := serviceID("blog", "db", []string{"db.forge"}); ok {
		t.Error("serviceID took another project's db")
	}
}
