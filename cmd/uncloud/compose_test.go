package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/uncloud-mesh/uncloud/api"
)

// writeProject writes files (names may hold a directory) under a new
// directory named dir and returns its path.
func writeProject(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), dir)
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// deployIn loads the project in dir as `uncloud deploy ARGS…` run there
// would, with env as its whole environment.
func deployIn(t *testing.T, dir string, env []string, args ...string) (composeResult, error) {
	t.Helper()
	t.Chdir(dir)
	var c struct {
		Deploy deployCmd `cmd:""`
	}
	p, err := kong.New(&c, kong.Exit(func(int) { t.Fatal("kong exited") }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse(append([]string{"deploy"}, args...)); err != nil {
		t.Fatalf("deploy %q: %v", args, err)
	}
	return c.Deploy.load(context.Background(), env)
}

func service(t *testing.T, res composeResult, name string) api.RunRequest {
	t.Helper()
	for _, s := range res.Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no service %s in %+v", name, res.Services)
	return api.RunRequest{}
}

func names(res composeResult) []string {
	var out []string
	for _, s := range res.Services {
		out = append(out, s.Name)
	}
	return out
}

func TestComposeServiceMapping(t *testing.T) {
	dir := writeProject(t, "Shop App", map[string]string{
		"compose.yaml": `
services:
  web:
    image: example/web:${TAG}
    command: ["/srv", "--port", "8080"]
    environment:
      MODE: prod
      FROM_SHELL:
    env_file: web.env
    ports:
      - app.example.com:8080/https
      - example.com/api:9000/http
      - "8443:443"
      - "127.0.0.1:5353:53/udp"
      - "8000-8001:80-81"
      - "9000-9009:90"
      - 9100
      - target: 81
        published: "8081"
        host_ip: "::1"
    x-ports: [admin.example.com:8080/https]
    volumes:
      - data:/var/lib/web
      - ./conf:/conf:ro
      - /scratch
    deploy:
      replicas: 3
    healthcheck:
      test: ["CMD", "/srv", "probe"]
    restart: always
    pull_policy: always
    x-machines: [m1, m2]
    x-allow-from: [ingress, "machine:m3"]
  agent:
    image: example/agent
    deploy: {mode: global}
    healthcheck:
      test: /probe --quick
    x-allow-from: web
    x-machines: "m1, m2"
volumes:
  data: {}
`,
		"web.env": "FROM_FILE=1\n",
	})
	res, err := deployIn(t, dir, []string{"TAG=2", "FROM_SHELL=yes"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Project != "shopapp" {
		t.Errorf("project %q, want the directory's name as Compose makes it, shopapp", res.Project)
	}
	if want := "services.web.volumes[]: anonymous volume /scratch: not supported by uncloud, ignored (name it: NAME:/scratch)"; len(res.Warnings) != 1 || res.Warnings[0] != want {
		t.Errorf("warnings %q, want only %q", res.Warnings, want)
	}
	if got := names(res); !slices.Equal(got, []string{"agent", "web"}) {
		t.Fatalf("services %v", got)
	}
	agent, web := service(t, res, "agent"), service(t, res, "web")
	for _, tc := range []struct {
		what      string
		got, want any
	}{
		{"image (interpolated)", web.Image, "example/web:2"},
		{"project", web.Project + "," + agent.Project, "shopapp,shopapp"},
		{"command", strings.Join(web.Cmd, " "), "/srv --port 8080"},
		{"env (env_file, and a value from the environment)", strings.Join(web.Env, ","), "FROM_FILE=1,FROM_SHELL=yes,MODE=prod"},
		{"ports", strings.Join(web.Ports, ","), "app.example.com:8080/https,example.com/api:9000/http,8443:443,127.0.0.1:5353:53/udp," +
			"8000:80,8001:81,9000-9009:90,9100,[::1]:8081:81,admin.example.com:8080/https"},
		{"volumes (no anonymous one)", strings.Join(web.Volumes, ","), "data:/var/lib/web," + filepath.Join(dir, "conf") + ":/conf:ro"},
		{"replicas", web.Replicas, 3},
		{"health", strings.Join(web.Health, " "), "CMD /srv probe"},
		{"restart", web.Restart, "always"},
		{"pull", web.Pull, "always"},
		{"machines (list)", strings.Join(web.Machines, ","), "m1,m2"},
		{"allow-from (list)", strings.Join(web.AllowFrom, ","), "ingress,machine:m3"},
		{"agent mode", agent.Mode, "global"},
		{"agent health (a string is run by a shell)", strings.Join(agent.Health, "|"), "CMD-SHELL|/probe --quick"},
		{"agent allow-from (string)", strings.Join(agent.AllowFrom, ","), "web"},
		{"agent machines (comma-separated)", strings.Join(agent.Machines, ","), "m1,m2"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.what, tc.got, tc.want)
		}
	}
}

func TestComposeFileNames(t *testing.T) {
	one := func(image string) string { return "services:\n  app:\n    image: " + image + "\n" }
	for _, tc := range []struct {
		name  string
		files map[string]string
		cwd   string // below the project, when not ""
		args  []string
		image string
		ports string
	}{
		{name: "compose.yaml", files: map[string]string{"compose.yaml": one("a")}, image: "a"},
		{name: "compose.yml", files: map[string]string{"compose.yml": one("b")}, image: "b"},
		{name: "docker-compose.yml", files: map[string]string{"docker-compose.yml": one("c")}, image: "c"},
		{name: "docker-compose.yaml", files: map[string]string{"docker-compose.yaml": one("d")}, image: "d"},
		{name: "compose.yaml before docker-compose.yml", files: map[string]string{"docker-compose.yml": one("old"), "compose.yaml": one("new")}, image: "new"},
		{name: "override file merged", image: "b:2", ports: "80,81",
			files: map[string]string{"compose.yaml": one("b:1") + "    ports: [\"80\"]\n", "compose.override.yaml": "services:\n  app:\n    image: b:2\n    ports: [\"81\"]\n"}},
		{name: "docker-compose.override.yml merged", image: "c:2",
			files: map[string]string{"docker-compose.yml": one("c:1"), "docker-compose.override.yml": one("c:2")}},
		{name: "found from a subdirectory", files: map[string]string{"compose.yaml": one("up"), "src/x": ""}, cwd: "src", image: "up"},
		{name: "several -f merged in order, no override file then", image: "prod", ports: "80,443",
			files: map[string]string{
				"compose.yaml":          one("dev") + "    ports: [\"80\"]\n",
				"compose.override.yaml": one("never"),
				"prod.yaml":             "services:\n  app:\n    image: prod\n    ports: [\"443\"]\n",
			},
			args: []string{"-f", "compose.yaml", "-f", "prod.yaml"}},
		{name: "COMPOSE_FILE from .env", files: map[string]string{"compose.yaml": one("x"), "other.yaml": one("other"), ".env": "COMPOSE_FILE=other.yaml\n"}, image: "other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeProject(t, "proj", tc.files)
			res, err := deployIn(t, filepath.Join(dir, tc.cwd), nil, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			app := service(t, res, "app")
			if app.Image != tc.image || strings.Join(app.Ports, ",") != tc.ports {
				t.Errorf("image %q ports %q, want %q %q (files %v)", app.Image, app.Ports, tc.image, tc.ports, res.Files)
			}
			if res.Project != "proj" {
				t.Errorf("project %q, want proj", res.Project)
			}
		})
	}
}

func TestComposeProjectName(t *testing.T) {
	plain := "services:\n  db:\n    image: postgres\n"
	named := "name: fromfile\n" + plain
	for _, tc := range []struct {
		name, body string
		env, args  []string
		want       string
	}{
		{name: "directory", body: plain, want: "my-site-2"}, // Compose keeps "_"; a DNS label cannot
		{name: "name: in the file", body: named, want: "fromfile"},
		{name: "COMPOSE_PROJECT_NAME over name:", body: named, env: []string{"COMPOSE_PROJECT_NAME=fromenv"}, want: "fromenv"},
		{name: "-p over everything", body: named, env: []string{"COMPOSE_PROJECT_NAME=fromenv"}, args: []string{"-p", "flag"}, want: "flag"},
		{name: "--project-name", body: plain, args: []string{"--project-name", "long"}, want: "long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeProject(t, "My_Site-2", map[string]string{"compose.yaml": tc.body})
			res, err := deployIn(t, dir, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Project != tc.want || service(t, res, "db").Project != tc.want {
				t.Errorf("project %q, request's %q, want %q", res.Project, service(t, res, "db").Project, tc.want)
			}
		})
	}
	dir := writeProject(t, "p", map[string]string{"compose.yaml": plain})
	if _, err := deployIn(t, dir, nil, "-p", "Bad Name"); err == nil || !strings.Contains(err.Error(), "Bad Name") {
		t.Errorf("-p 'Bad Name': %v, want an error naming it", err)
	}
}

func TestComposeProfiles(t *testing.T) {
	dir := writeProject(t, "photos", map[string]string{"compose.yaml": `
services:
  server: {image: server}
  ml:
    image: ml
    profiles: [ml]
    sysctls: [net.core.somaxconn=1024]
  backup:
    image: backup
    profiles: [backup, ops]
`})
	for _, tc := range []struct {
		env, args []string
		want      string
		warnings  int
	}{
		{want: "server"},
		{args: []string{"--profile", "ml"}, want: "ml,server", warnings: 1},
		{args: []string{"--profile", "ml", "--profile", "ops"}, want: "backup,ml,server", warnings: 1},
		{env: []string{"COMPOSE_PROFILES=backup"}, want: "backup,server"},
		{args: []string{"--profile", "*"}, want: "backup,ml,server", warnings: 1},
	} {
		res, err := deployIn(t, dir, tc.env, tc.args...)
		if err != nil {
			t.Fatalf("%v %v: %v", tc.env, tc.args, err)
		}
		if got := strings.Join(names(res), ","); got != tc.want || len(res.Warnings) != tc.warnings {
			t.Errorf("%v %v: services %s warnings %q, want %s and %d warning(s) (a service left out is not warned about)", tc.env, tc.args, got, res.Warnings, tc.want, tc.warnings)
		}
	}
}

func TestComposeEnvironment(t *testing.T) {
	dir := writeProject(t, "env", map[string]string{
		"compose.yaml": `
services:
  app:
    image: "app:${TAG:-latest}"
    environment:
      DOMAIN: ${DOMAIN}
      SECRET: ${SECRET:?set SECRET in .env}
`,
		".env":     "DOMAIN=example.org\nSECRET=from-dotenv\n",
		"prod.env": "TAG=1.2\nDOMAIN=prod.example.org\nSECRET=prod\n",
	})
	for _, tc := range []struct {
		env, args []string
		want      string
	}{
		{want: "app:latest DOMAIN=example.org,SECRET=from-dotenv"},
		{env: []string{"DOMAIN=shell.example.org", "TAG=2"}, want: "app:2 DOMAIN=shell.example.org,SECRET=from-dotenv"}, // the environment wins over .env
		{args: []string{"--env-file", "prod.env"}, want: "app:1.2 DOMAIN=prod.example.org,SECRET=prod"},                 // instead of .env
	} {
		res, err := deployIn(t, dir, tc.env, tc.args...)
		if err != nil {
			t.Fatalf("%v %v: %v", tc.env, tc.args, err)
		}
		app := service(t, res, "app")
		if got := app.Image + " " + strings.Join(app.Env, ","); got != tc.want {
			t.Errorf("%v %v: %s, want %s", tc.env, tc.args, got, tc.want)
		}
	}
	if err := os.Remove(filepath.Join(dir, ".env")); err != nil {
		t.Fatal(err)
	}
	_, err := deployIn(t, dir, nil)
	if want := "compose.yaml:7: error while interpolating services.app.environment.SECRET: required variable SECRET is missing a value: set SECRET in .env"; err == nil || err.Error() != want {
		t.Errorf("without SECRET: %v\nwant %s", err, want)
	}
}

func TestComposeErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		args  []string
		want  string
	}{
		{name: "malformed YAML", files: map[string]string{"compose.yaml": "services:\n  web:\n    image: x\n    ports: [\n"},
			want: "compose.yaml:4: did not find expected node content"},
		{name: "malformed override file", files: map[string]string{"compose.yaml": "services:\n  web: {image: x}\n", "compose.override.yaml": "services:\n  web:\n    image: y\n  bad\n"},
			want: "compose.override.yaml:4: could not find expected ':'"},
		{name: "a key given twice", files: map[string]string{"compose.yaml": "services:\n  web:\n    image: x\n    image: y\n"},
			want: `compose.yaml:4: mapping key "image" already defined at line 3`},
		{name: "unknown key (Compose schema)", files: map[string]string{"compose.yaml": "services:\n  web:\n    image: x\n    imgae: y\n"},
			want: "compose.yaml:4: services.web: Additional property imgae is not allowed"},
		{name: "wrong type in the second -f", files: map[string]string{"a.yaml": "services:\n  web: {image: x}\n", "b.yaml": "services:\n  web:\n    deploy:\n      replicas: many\n"},
			args: []string{"-f", "a.yaml", "-f", "b.yaml"},
			want: `b.yaml:4: error while interpolating services.web.deploy.replicas: failed to cast to expected type: strconv.Atoi: parsing "many": invalid syntax`},
		{name: "a service name with dots", files: map[string]string{"compose.yaml": "services:\n  api.v2:\n    image: x\n    deploy:\n      mode: replicated\n      replicas: ${N:?say how many}\n"},
			want: "compose.yaml:6: error while interpolating services.api.v2.deploy.replicas: required variable N is missing a value: say how many"},
		{name: "Docker port", files: map[string]string{"compose.yaml": "services:\n  web:\n    image: x\n    ports:\n      - \"8080:80:90\"\n"},
			want: `compose.yaml:5: error while interpolating services.web.ports.[]: failed to cast to expected type: port "8080:80:90": invalid IP address: 8080`},
		{name: "ingress port without http or https", files: map[string]string{"compose.yaml": "services:\n  web:\n    image: x\n    ports: [\"app.example.com:8080\"]\n"},
			want: `add /http or /https`},
		{name: "x-ports holds ingress ports only", files: map[string]string{"compose.yaml": "services:\n  web:\n    image: x\n    x-ports: [\"8080:80\"]\n"},
			want: `compose.yaml:4: services.web.x-ports: "8080:80" is not an ingress port`},
		{name: "no image", files: map[string]string{"compose.yaml": "services:\n  web:\n    build: .\n"},
			want: "compose.yaml:2: services.web has no image (uncloud does not build"},
		{name: "no file", files: map[string]string{"README": ""},
			want: "no Compose file in "},
		{name: "-f names a missing file", files: map[string]string{"compose.yaml": "services:\n  web: {image: x}\n"}, args: []string{"-f", "nope.yaml"},
			want: "nope.yaml: no such file"},
		{name: "every service in a profile", files: map[string]string{"compose.yaml": "services:\n  web: {image: x, profiles: [a]}\n"},
			want: "no services to deploy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeProject(t, "errs", tc.files)
			_, err := deployIn(t, dir, nil, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v\nwant one with %q", err, tc.want)
			}
		})
	}
}

func TestComposeWarnings(t *testing.T) {
	dir := writeProject(t, "warn", map[string]string{"compose.yaml": `
x-common: &common
  restart: unless-stopped
  logging: {driver: json-file}
services:
  web:
    <<: *common
    image: web
    cap_add: [NET_ADMIN]
    networks: [front, back]
    depends_on: [db]
    deploy:
      replicas: 2
      resources: {limits: {memory: 1g}}
    healthcheck: {test: [CMD, probe], interval: 5s, retries: 3}
    ports:
      - target: 80
        published: "8080"
        app_protocol: http
    volumes:
      - type: tmpfs
        target: /tmp
      - ./x:/x:z
    x-traefik: ignored, an extension of another tool
  db:
    <<: *common
    image: db
    networks: [back]
    sysctls: [net.core.somaxconn=1024]
networks:
  front: {}
  back: {}
volumes:
  data: {driver: local}
secrets:
  pw: {file: pw.txt}
`, "pw.txt": "x"})
	want := []string{
		"networks: ignored, uncloud has one flat network (every container reaches every other)",
		"services.db.sysctls: not supported by uncloud, ignored",
		"services.web.ports[].app_protocol: not supported by uncloud, ignored",
		"services.web.volumes[].bind.selinux: not supported by uncloud, ignored",
		"volumes.data.driver: not supported by uncloud, ignored",
	}
	res, err := deployIn(t, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Warnings, want) {
		t.Errorf("warnings:\n  %s\nwant:\n  %s", strings.Join(res.Warnings, "\n  "), strings.Join(want, "\n  "))
	}
	_, err = deployIn(t, dir, nil, "--strict")
	if err == nil || !strings.Contains(err.Error(), "--strict: 5 unsupported Compose key(s)") || !strings.Contains(err.Error(), "services.db.sysctls") {
		t.Errorf("--strict: %v", err)
	}
	clean := writeProject(t, "clean", map[string]string{"compose.yaml": "services:\n  web: {image: web, x-anything: 1}\n"})
	if res, err := deployIn(t, clean, nil, "--strict"); err != nil || len(res.Services) != 1 {
		t.Errorf("--strict on a file with nothing to warn of: %v", err)
	}
}

func TestIngressPortForm(t *testing.T) {
	for s, want := range map[string]bool{
		"app.example.com:8080/https":         true,
		"example.com/api:9000/http":          true,
		"app.example.com:8080":               true, // refused later: it needs http or https
		"localhost:8080/http":                true,
		"8080/https":                         true, // refused later: no host name
		"80":                                 false,
		"8080:80":                            false,
		"127.0.0.1:8080:80/udp":              false,
		"8000-8010:8000-8010":                false,
		"[::1]:8080:80":                      false,
		"::1:8080:80":                        false,
		"fe80::1:8080:80":                    false,
		"0.0.0.0:53:53/udp":                  false,
		"192.168.1.10:8443-8444:443-444/tcp": false,
	} {
		if got := isIngressPort(s); got != want {
			t.Errorf("isIngressPort(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestDeployFlags(t *testing.T) {
	dir := writeProject(t, "flags", map[string]string{"compose.yaml": "services:\n  web: {image: web, pull_policy: never}\n"})
	t.Chdir(dir)
	var c struct {
		Deploy deployCmd `cmd:""`
	}
	p, err := kong.New(&c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse([]string{"deploy", "-f", "a,b.yaml", "--file", "c.yaml", "-p", "x", "--profile", "p1", "--profile", "p2",
		"--env-file", "e1", "--env-file", "e2", "--strict", "--dry-run", "--pull", "always"}); err != nil {
		t.Fatal(err)
	}
	o := c.Deploy.options([]string{"A=1"})
	if strings.Join(o.Files, "|") != "a,b.yaml|c.yaml" || o.Project != "x" || strings.Join(o.Profiles, "|") != "p1|p2" ||
		strings.Join(o.EnvFiles, "|") != "e1|e2" || !c.Deploy.Strict || !c.Deploy.DryRun || o.Env[0] != "A=1" {
		t.Errorf("options %+v from flags %+v", o, c.Deploy)
	}
	res, err := deployIn(t, dir, nil, "--pull", "always")
	if err != nil || service(t, res, "web").Pull != "always" {
		t.Errorf("--pull always over pull_policy never: %+v %v", res.Services, err)
	}
}
