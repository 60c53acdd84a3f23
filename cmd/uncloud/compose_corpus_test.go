package main

import (
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/compose/*/warnings.golden from what the loader says")

// corpusFacts is testdata/compose/NAME/expect.json: how the project is
// deployed and what must come out of it.
type corpusFacts struct {
	Args     []string            `json:"args"`     // deploy flags, e.g. --profile ml
	Env      []string            `json:"env"`      // the whole environment (none: empty)
	Project  string              `json:"project"`  // the project name every request carries
	Images   map[string]string   `json:"images"`   // service → image, for exactly the services deployed
	Ports    map[string][]string `json:"ports"`    // service → RunRequest.Ports, for the services named
	Replicas map[string]int      `json:"replicas"` // service → deploy.replicas, for the services named
	// DockerCompose: docker compose reads the project too (its ingress
	// ports are in x-ports; it uses nothing newer than docker-compose
	// 1.29 knows): TestComposeCorpusUnderDockerCompose.
	DockerCompose bool `json:"docker_compose"`
}

// corpus is the projects of testdata/compose, with their expect.json.
func corpus(t *testing.T) map[string]corpusFacts {
	t.Helper()
	dirs, err := filepath.Glob("testdata/compose/*")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]corpusFacts{}
	for _, dir := range dirs {
		dir, err := filepath.Abs(dir)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(dir, "expect.json"))
		if err != nil {
			t.Fatal(err)
		}
		var f corpusFacts
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatalf("%s/expect.json: %v", dir, err)
		}
		out[dir] = f
	}
	return out
}

// TestComposeCorpus loads each project of testdata/compose as
// `uncloud deploy --dry-run ARGS` run in its directory would (the agent
// is not asked: this is everything before it), and checks that it loads,
// says exactly the warnings of warnings.golden, and maps the facts of
// expect.json. `go test -run TestComposeCorpus -update` rewrites the
// golden files; read the diff before committing it.
func TestComposeCorpus(t *testing.T) {
	projects := corpus(t)
	if len(projects) < 20 {
		t.Errorf("%d projects in the corpus, want at least 20", len(projects))
	}
	for _, dir := range sortedKeys(projects) {
		want := projects[dir]
		t.Run(filepath.Base(dir), func(t *testing.T) {
			res, err := deployIn(t, dir, want.Env, append([]string{"--dry-run"}, want.Args...)...)
			if err != nil {
				t.Fatalf("deploy --dry-run %s: %v", strings.Join(want.Args, " "), err)
			}
			// What deploy prints as warnings: compose-go's, then the keys.
			warnings := append(res.Notices, res.Warnings...)
			golden := filepath.Join(dir, "warnings.golden")
			if *updateGolden {
				body := strings.Join(warnings, "\n")
				if body != "" {
					body += "\n"
				}
				if err := os.WriteFile(golden, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			wantWarnings := strings.FieldsFunc(string(raw), func(r rune) bool { return r == '\n' })
			if !slices.Equal(warnings, wantWarnings) {
				t.Errorf("warnings:\n  %s\nwant (warnings.golden):\n  %s", strings.Join(warnings, "\n  "), strings.Join(wantWarnings, "\n  "))
			}
			if res.Project != want.Project {
				t.Errorf("project %q, want %q", res.Project, want.Project)
			}
			images := map[string]string{}
			for _, s := range res.Services {
				images[s.Name] = s.Image
				if s.Project != want.Project {
					t.Errorf("service %s carries project %q, want %q", s.Name, s.Project, want.Project)
				}
			}
			for _, name := range sortedKeys(want.Images) {
				if images[name] != want.Images[name] {
					t.Errorf("service %s: image %q, want %q", name, images[name], want.Images[name])
				}
			}
			if len(images) != len(want.Images) {
				t.Errorf("%d services %v, want %d", len(images), sortedKeys(images), len(want.Images))
			}
			for _, name := range sortedKeys(want.Ports) {
				if got := service(t, res, name).Ports; !slices.Equal(got, want.Ports[name]) {
					t.Errorf("service %s: ports %q, want %q", name, got, want.Ports[name])
				}
			}
			for _, name := range sortedKeys(want.Replicas) {
				if got := service(t, res, name).Replicas; got != want.Replicas[name] {
					t.Errorf("service %s: replicas %d, want %d", name, got, want.Replicas[name])
				}
			}
		})
	}
}

// TestComposeCorpusUnderDockerCompose: the projects that put their
// ingress ports in x-ports are read by docker compose itself (config -q,
// with the same flags and environment), so one file serves both.
func TestComposeCorpusUnderDockerCompose(t *testing.T) {
	var compose []string
	if exec.Command("docker", "compose", "version").Run() == nil {
		compose = []string{"docker", "compose"}
	} else if p, err := exec.LookPath("docker-compose"); err == nil {
		compose = []string{p}
	} else {
		t.Skip("neither docker compose nor docker-compose is installed")
	}
	n := 0
	projects := corpus(t)
	for _, dir := range sortedKeys(projects) {
		want := projects[dir]
		if !want.DockerCompose {
			continue
		}
		n++
		t.Run(filepath.Base(dir), func(t *testing.T) {
			args := append(slices.Clone(compose[1:]), want.Args...)
			cmd := exec.Command(compose[0], append(args, "config", "-q")...)
			cmd.Dir = dir
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, want.Env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
			}
		})
	}
	if n < 5 {
		t.Errorf("%d projects for docker compose, want at least 5", n)
	}
}
