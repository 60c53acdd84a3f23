package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/distribution/reference"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// The real deploys of issue 15: projects of the Compose corpus
// (cmd/uncloud/testdata/compose, which `deploy --dry-run` reads in the
// cmd/uncloud tests) deployed on three machines with their own dockerds,
// from images in a lab registry. The corpus files are used as they are;
// each deploy adds one override file (`-f FILE -f e2e-override.yaml`,
// Compose's own mechanism) that swaps every image for the test's stand-in
// (the echoserver, pushed under each image's name) and tells the stand-in
// what to play: the ports to listen on, a health check it can answer in
// place of `pg_isready` or `curl`, an entrypoint in place of a script of
// the real image.

// corpusDir is the corpus, from the e2e package's directory.
const corpusDir = "../cmd/uncloud/testdata/compose"

// corpusDeploy is one project deployed for real and what is checked of it.
type corpusDeploy struct {
	dir  string   // under corpusDir
	args []string // more deploy flags (--profile)
	// env is the deploy's environment beyond DOCKER_CONFIG, "{dir}"
	// replaced by the project's copy: Compose lets the environment win
	// over .env, which keeps host paths of the file in the test's
	// directory.
	env []string
	// services are the services the deploy must run, and how the stand-in
	// plays each; no other service of the project may run.
	services map[string]standIn
	absent   []string // services of the file that its profiles leave out
	// reach: a container of the first service gets an answer from the
	// second's stand-in at "name:port", by <service>.internal and by the
	// bare name the file's own configuration uses (the containers'
	// search domain is internal).
	reach [][3]string
	// files: in a container of the service, the file at the path holds
	// the text (secrets, configs and bind mounts of the file).
	files [][3]string
	// lookup: the service's name resolves to the addresses of all its
	// containers, asked from a container of the first service.
	lookup [][2]string
}

// standIn is what the override makes of one service.
type standIn struct {
	replicas int    // containers wanted (global: one per machine)
	ports    string // what the stand-in listens on ($PORT); "": 8080
	// health: the file's health check runs a program of the real image;
	// the override asks the stand-in at this port instead.
	health string
	// entrypoint: the file's entrypoint is a script of the real image;
	// the override runs the stand-in.
	entrypoint bool
	// nofile is the file's ulimits.nofile: the override resets the
	// ulimits where this machine cannot grant them (see canRaiseNofile).
	nofile    uint64
	published []string // host ports ("8088") that must answer where a replica runs
	// after: services whose containers must have started before this
	// one's were created (depends_on, service_started); healthyAfter:
	// whose health check must have passed (service_healthy).
	after, healthyAfter []string
}

func corpusDeploys() []corpusDeploy {
	return []corpusDeploy{
		{dir: "blog", services: map[string]standIn{
			"blog": {replicas: 1, ports: "2368", after: []string{"db"}},
			"db":   {replicas: 1, ports: "3306", health: "3306"},
		}, reach: [][3]string{{"blog", "db", "3306"}}},

		{dir: "filesync", services: map[string]standIn{
			"app":   {replicas: 1, ports: "80", published: []string{"8088"}, after: []string{"redis"}, healthyAfter: []string{"db"}},
			"cron":  {replicas: 1, entrypoint: true, after: []string{"app"}},
			"db":    {replicas: 1, ports: "5432", health: "5432"},
			"redis": {replicas: 1, ports: "6379"},
		}, reach: [][3]string{{"app", "db", "5432"}, {"app", "redis", "6379"}, {"cron", "app", "80"}}},

		{dir: "gitforge", services: map[string]standIn{
			"server": {replicas: 1, ports: "2222,3000", published: []string{"2222"}, after: []string{"db"}},
			"db":     {replicas: 1, ports: "5432"},
		}, reach: [][3]string{{"server", "db", "5432"}}},

		{dir: "analytics", env: []string{"SECRET_KEY_BASE=not-a-real-key"}, services: map[string]standIn{
			"plausible":           {replicas: 1, ports: "8000", healthyAfter: []string{"plausible_db", "plausible_events_db"}},
			"plausible_db":        {replicas: 1, ports: "5432", health: "5432"},
			"plausible_events_db": {replicas: 1, ports: "8123", health: "8123", nofile: 262144},
		}, reach: [][3]string{{"plausible", "plausible_db", "5432"}, {"plausible", "plausible_events_db", "8123"}}},

		{dir: "photos", args: []string{"--profile", "workers"},
			env: []string{"UPLOAD_LOCATION={dir}/library", "DB_DATA_LOCATION={dir}/postgres"},
			services: map[string]standIn{
				"server":   {replicas: 1, ports: "2283", published: []string{"2283"}, after: []string{"redis", "database"}},
				"worker":   {replicas: 3}, // WORKERS in .env
				"redis":    {replicas: 1, ports: "6379", health: "6379"},
				"database": {replicas: 1, ports: "5432"},
			}, absent: []string{"machine-learning"},
			reach: [][3]string{{"server", "redis", "6379"}, {"server", "database", "5432"}, {"worker", "server", "2283"}}},

		{dir: "monitoring", services: map[string]standIn{
			"prometheus":    {replicas: 1, ports: "9090"},
			"grafana":       {replicas: 1, ports: "3000"},
			"node-exporter": {replicas: 3, ports: "9100"},
			"cadvisor":      {replicas: 3, ports: "8080"},
		}, reach: [][3]string{{"prometheus", "node-exporter", "9100"}, {"grafana", "prometheus", "9090"}},
			files: [][3]string{{"grafana", "/run/secrets/grafana_admin", "admin-password"},
				{"prometheus", "/etc/prometheus/prometheus.yml", "names: [node-exporter.internal]"}},
			lookup: [][2]string{{"prometheus", "node-exporter"}}},

		{dir: "recipes", services: map[string]standIn{
			"db_recipes":    {replicas: 1, ports: "5432"},
			"web_recipes":   {replicas: 1, ports: "8080", after: []string{"db_recipes"}},
			"nginx_recipes": {replicas: 1, ports: "80", after: []string{"web_recipes"}},
		}, reach: [][3]string{{"nginx_recipes", "web_recipes", "8080"}, {"web_recipes", "db_recipes", "5432"}},
			files: [][3]string{{"nginx_recipes", "/etc/nginx/conf.d/default.conf", "proxy_pass http://web_recipes:8080;"}}},
	}
}

// TestComposeCorpusDeploys: seven projects of the Compose corpus, of
// different shapes, deploy for real on three machines (their own
// dockerds), one after another and then side by side, with images the
// test built and pushed to a lab registry with a password (DOCKER_CONFIG
// holds the login). For each: deploy exits 0; every service the profiles
// select runs its replicas, spread over the machines, and nothing else
// of the project; health checks pass where the file has one; depends_on
// is observed (a service_healthy dependency's check passed before the
// dependent's containers were created, a service_started one had
// started); a container reaches the others by <service>.internal and by
// the bare names the file uses, over the mesh; published host ports
// answer from the internet on the machine running the replica; secrets,
// configs and bind-mounted files hold the corpus's content. With all
// seven running (three of them have a db), every project's names still
// reach its own services, and another project's by their full name;
// `rm --project` then removes each.
func TestComposeCorpusDeploys(t *testing.T) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := newContainerLab(ctx, t, withDocker, withDocker, withDocker)
	reg := c.startRegistry(ctx, t)
	t.Logf("lab and registry up in %v", time.Since(began).Round(100*time.Millisecond))

	deploys := corpusDeploys()
	facts := map[string]corpusExpect{}
	for _, d := range deploys {
		facts[d.dir] = readCorpusExpect(t, d.dir)
	}

	// ONE image, the stand-in, pushed under every name the projects use:
	// one import, then a tag and a push per name (the layer crosses once).
	pushed := time.Now()
	rootfs, err := testimage.Tarball(c.echoBin)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, d := range deploys {
		for svc := range d.services {
			refs = append(refs, mirrorRef(t, reg.Addr, facts[d.dir].Images[svc]))
		}
	}
	slices.Sort(refs)
	refs = slices.Compact(refs)
	digest := reg.push(ctx, t, rootfs, refs[0])
	for _, ref := range refs[1:] {
		if err := reg.docker.Client.ImageTag(ctx, refs[0], ref); err != nil {
			t.Fatal(err)
		}
		if d := pushTag(ctx, t, reg.docker, ref, reg.user, reg.password); d != digest {
			t.Fatalf("%s pushed as %s, want %s (one image under every name)", ref, d, digest)
		}
	}
	t.Logf("stand-in %s pushed under %d names in %v", digest, len(refs), time.Since(pushed).Round(100*time.Millisecond))

	// Whatever fails, nothing is left running for the lab's teardown
	// (with a context of its own: the test's ends before cleanups run).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		removeAll(ctx, t, c)
	})
	var up []*corpusCheck // the projects that deployed and passed
	var summary []string
	for _, d := range deploys {
		// A project that fails says what it found; the others go on.
		cc := &corpusCheck{c: c, reg: reg, d: d, facts: facts[d.dir]}
		if t.Run(d.dir, cc.run) {
			up = append(up, cc)
			summary = append(summary, fmt.Sprintf("%s %.1fs", d.dir, cc.took.Seconds()))
		}
	}
	t.Logf("deploys: %s", strings.Join(summary, ", "))
	if len(up) != len(deploys) {
		return
	}

	t.Run("side by side: each project's names reach its own services, other projects' by full name", func(t *testing.T) {
		var services []api.ServiceInfo
		if err := c.ucJSON(ctx, t, 2, &services, "ls", "-o", "json"); err != nil {
			t.Fatal(err)
		}
		want, perMachine := 0, map[string]int{}
		for _, cc := range up {
			want += len(cc.d.services)
		}
		if len(services) != want {
			t.Errorf("%d services in ls, want the seven projects' %d", len(services), want)
		}
		for _, ci := range c.ps(ctx, t, 2) {
			perMachine[ci.Machine]++
		}
		t.Logf("containers per machine: %v", perMachine)
		// The names several projects have (db, redis, server): each
		// project's containers still reach their own by them.
		projects := map[string]int{}
		for _, cc := range up {
			for svc := range cc.d.services {
				projects[svc]++
			}
		}
		for i, cc := range up {
			for _, r := range cc.d.reach {
				if projects[r[1]] > 1 {
					cc.checkReachOf(ctx, t, r[0], cc, r[1], r[2], []string{r[1] + ".internal", r[1]})
				}
			}
			// The next project's first target, by its full name.
			other := up[(i+1)%len(up)]
			to, port := other.d.reach[0][1], other.d.reach[0][2]
			cc.checkReachOf(ctx, t, cc.d.reach[0][0], other, to, port, []string{other.ids[to] + ".internal"})
		}
	})

	t.Run("rm --project removes each project, and only it", func(t *testing.T) {
		for i, cc := range up {
			if out, err := c.uncloud(ctx, t, 0, "rm", "--project", cc.facts.Project); err != nil {
				t.Fatalf("rm --project %s: %v\n%s", cc.facts.Project, err, out)
			}
			eventuallyE2E(t, "the containers of "+cc.facts.Project+" gone, the others' kept", 60*time.Second, func() error {
				left := map[string]int{}
				for _, ci := range c.ps(ctx, t, 0) {
					left[ci.Service]++
				}
				for j, other := range up {
					for _, id := range other.ids {
						if gone := j <= i; gone && left[id] > 0 {
							return fmt.Errorf("%s has %d containers after rm --project %s", id, left[id], cc.facts.Project)
						} else if !gone && left[id] == 0 {
							t.Fatalf("%s lost its containers to rm --project %s", id, cc.facts.Project)
						}
					}
				}
				return nil
			})
		}
	})
	t.Logf("whole test %v", time.Since(began).Round(time.Second))
}

// removeAll removes every service and waits until no container is left.
func removeAll(ctx context.Context, t *testing.T, c *containerLab) {
	t.Helper()
	var services []api.ServiceInfo
	if err := c.ucJSON(ctx, t, 0, &services, "ls", "-o", "json"); err != nil {
		t.Errorf("ls: %v", err)
		return
	}
	for _, s := range services {
		if out, err := c.uncloud(ctx, t, 0, "rm", s.Name); err != nil {
			t.Errorf("rm %s: %v\n%s", s.Name, err, out)
		}
	}
	eventuallyE2E(t, "no container left", 60*time.Second, func() error {
		if cs := c.ps(ctx, t, 0); len(cs) > 0 {
			return fmt.Errorf("%s (%s) is %s", cs[0].Name, cs[0].Service, cs[0].State)
		}
		return nil
	})
}

// corpusExpect is the part of a corpus project's expect.json this test
// uses.
type corpusExpect struct {
	Project string            `json:"project"`
	Images  map[string]string `json:"images"`
}

func readCorpusExpect(t *testing.T, dir string) corpusExpect {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(corpusDir, dir, "expect.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e corpusExpect
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("%s/expect.json: %v", dir, err)
	}
	return e
}

// mirrorRef is image's copy in the lab registry: the same path and tag,
// as a registry mirror keeps them (ghost:5-alpine is
// REGISTRY/library/ghost:5-alpine, ghcr.io/plausible/x:1 is
// REGISTRY/plausible/x:1).
func mirrorRef(t *testing.T, registry, image string) string {
	t.Helper()
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		t.Fatalf("image %q: %v", image, err)
	}
	tagged, ok := named.(reference.Tagged)
	if !ok {
		t.Fatalf("image %q has no tag", image)
	}
	return registry + "/" + reference.Path(named) + ":" + tagged.Tag()
}

// corpusCheck deploys one project and checks it.
type corpusCheck struct {
	c     *containerLab
	reg   *labRegistry
	d     corpusDeploy
	facts corpusExpect
	// ids are the project's services as `ls` names them, by the file's
	// names, and byService their containers, once they run.
	ids       map[string]string
	byService map[string][]api.ContainerInfo
	took      time.Duration // the deploy command's
}

// override is the e2e-override.yaml of the project: per service the
// stand-in's image and what it needs to play the service.
func (cc *corpusCheck) override(t *testing.T) string {
	var b strings.Builder
	b.WriteString("# Written by TestComposeCorpusDeploys: the stand-in plays every service.\nservices:\n")
	names := make([]string, 0, len(cc.d.services))
	for svc := range cc.d.services {
		names = append(names, svc)
	}
	sort.Strings(names)
	for _, svc := range names {
		s := cc.d.services[svc]
		fmt.Fprintf(&b, "  %s:\n    image: %s\n", svc, mirrorRef(t, cc.reg.Addr, cc.facts.Images[svc]))
		if s.ports != "" {
			fmt.Fprintf(&b, "    environment:\n      PORT: %q\n", s.ports)
		}
		if s.entrypoint {
			b.WriteString("    entrypoint: [\"/echoserver\"]\n")
		}
		if s.health != "" {
			fmt.Fprintf(&b, "    healthcheck:\n      test: [\"CMD\", \"/echoserver\", \"get\", \"http://127.0.0.1:%s/\"]\n", s.health)
		}
		if s.nofile > 0 {
			if why := canRaiseNofile(s.nofile); why != "" {
				t.Logf("%s: the file's ulimits are reset: %s", svc, why)
				b.WriteString("    ulimits: !reset {}\n")
			}
		}
	}
	return b.String()
}

// canRaiseNofile says why a container here cannot get n open files ("" if
// it can): runc raises the limit above the one dockerd inherited only
// with CAP_SYS_RESOURCE, which some sandboxes take out of the bounding set.
func canRaiseNofile(n uint64) string {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err.Error()
	}
	if lim.Max >= n {
		return ""
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(string(status), "\n") {
		if hex, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			var caps uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(hex), "%x", &caps); err != nil {
				return err.Error()
			}
			const capSysResource = 24
			if caps&(1<<capSysResource) != 0 {
				return ""
			}
		}
	}
	return fmt.Sprintf("the hard limit of open files here is %d and CAP_SYS_RESOURCE is not in the bounding set, so runc cannot set %d", lim.Max, n)
}

// run deploys the project and checks it.
func (cc *corpusCheck) run(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, d := cc.c, cc.d
	src := filepath.Join(corpusDir, d.dir)
	dir := filepath.Join(t.TempDir(), d.dir)
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	var file string
	for _, name := range []string{"compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			file = filepath.Join(dir, name)
			break
		}
	}
	if file == "" {
		t.Fatalf("no Compose file in %s", src)
	}
	override := cc.override(t)
	if err := os.WriteFile(filepath.Join(dir, "e2e-override.yaml"), []byte(override), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("e2e-override.yaml:\n%s", override)

	argv := []string{"DOCKER_CONFIG=" + cc.reg.config}
	for _, e := range d.env {
		argv = append(argv, strings.ReplaceAll(e, "{dir}", dir))
	}
	argv = append(argv, c.lab.Uncloud, "deploy", "-p", cc.facts.Project, "-f", file, "-f", filepath.Join(dir, "e2e-override.yaml"))
	argv = append(argv, d.args...)
	began := time.Now()
	out, err := c.hosts[0].Run(ctx, "env", argv...)
	cc.took = time.Since(began)
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, out)
	}
	t.Logf("deploy took %v:\n%s", cc.took.Round(100*time.Millisecond), out)

	cc.waitRunning(ctx, t)
	cc.checkSpread(t)
	cc.checkOrder(ctx, t, out)
	cc.checkReach(ctx, t)
	cc.checkPublished(ctx, t)
	cc.checkFiles(ctx, t)
	cc.checkLookups(ctx, t)
	cc.checkSharedVolumes(ctx, t)
}
