package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestSecrets: an -e value, a secret and a config reach the containers of
// a service on two machines (each with its own dockerd), and none of the
// values is anywhere in the store (the badger files under each data
// dir), the agents' logs, `state ls -o json`, `ps -o json`, `inspect`
// or the containers' Docker labels, which show names only. A deploy with
// the same values changes nothing; one with a rotated secret rolls both
// containers, which then read the new content; rm removes their files.
func TestSecrets(t *testing.T) {
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, withDocker)
	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag, "-m", "m2"); err != nil {
		t.Fatalf("image push: %v\n%s", err, out)
	}
	const envName = "UNCLOUD_E2E_ENV_NAME"
	envValue := "env-value-" + randHex(t)
	secretV1 := "secret-one-" + randHex(t)
	secretV2 := "secret-two-" + randHex(t)
	configValue := "config-value-" + randHex(t)
	secretFile := filepath.Join(c.hosts[0].Dir, "api_key.txt")
	configFile := filepath.Join(c.hosts[0].Dir, "app.conf")
	for p, v := range map[string]string{secretFile: secretV1, configFile: configValue} {
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// read asks the echo server in container name (of web) for path.
	read := func(t *testing.T, name, path string) string {
		t.Helper()
		var got string
		eventuallyE2E(t, "read "+path+" in "+name, 30*time.Second, func() error {
			s, err := c.uncloud(ctx, t, 0, "exec", "--container", name, "web", "/echoserver", "get", "http://127.0.0.1:8080"+path)
			got = s
			return err
		})
		return strings.TrimSpace(got)
	}
	checkContainers := func(t *testing.T, secret string, n int) []api.ContainerInfo {
		t.Helper()
		web := c.running(ctx, t, 0, "web", n)
		machines := map[string]bool{}
		for _, ci := range web {
			machines[ci.Machine] = true
			if got := read(t, ci.Name, "/env?name="+envName); got != envValue {
				t.Errorf("%s on %s: env %s = %q, want %q", ci.Name, ci.Machine, envName, got, envValue)
			}
			if got := read(t, ci.Name, "/file?path=/run/secrets/api_key"); got != secret {
				t.Errorf("%s on %s: /run/secrets/api_key = %q, want %q", ci.Name, ci.Machine, got, secret)
			}
			if got := read(t, ci.Name, "/file?path=/etc/app.conf"); got != configValue {
				t.Errorf("%s on %s: /etc/app.conf = %q, want %q", ci.Name, ci.Machine, got, configValue)
			}
		}
		if len(machines) != n {
			t.Errorf("containers on %v, want %d machines", machines, n)
		}
		return web
	}
	values := []string{envValue, secretV1, secretV2, configValue}

	if !t.Run("run: env, secret and config readable in containers on both machines", func(t *testing.T) {
		out, err := c.uncloud(ctx, t, 0, "run", "--name", "web", "--replicas", "2", "-m", "m1,m2",
			"-e", envName+"="+envValue, "--secret", "api_key=@"+secretFile,
			"--config", "app.conf=@"+configFile+",target=/etc/app.conf,mode=0440", testimage.Tag)
		if err != nil {
			t.Fatalf("run: %v\n%s", err, out)
		}
		checkContainers(t, secretV1, 2)
	}) {
		return
	}
	if !t.Run("no value in the store, logs, state ls, ps, inspect or labels", func(t *testing.T) {
		c.assertNowhere(ctx, t, envName, values)
	}) {
		return
	}

	client := func(t *testing.T) *api.Client {
		t.Helper()
		// The host's socket, reached from here: its private /run/uncloud
		// is the host directory run/.
		cl, err := api.NewClient(filepath.Join(c.hosts[0].Dir, "run", "uncloud.sock"), api.SSHOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	// deploy is what `uncloud deploy` sends for a Compose file with this
	// service (composeSecrets maps secrets: and configs: to it).
	deploy := func(t *testing.T, secret string) []string {
		t.Helper()
		req := api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: testimage.Tag, Replicas: 2, Machines: []string{"m1", "m2"},
			Restart: "unless-stopped", Pull: "never",
			Env: []string{envName + "=" + envValue},
			Files: []api.FileSpec{{Kind: "secret", Name: "api_key"},
				{Kind: "config", Name: "app.conf", Target: "/etc/app.conf", Mode: 0o440}},
			Secrets: []api.SecretContent{{Kind: "secret", Name: "api_key", Data: []byte(secret)},
				{Kind: "config", Name: "app.conf", Data: []byte(configValue)}}}}}
		var plan []string
		dctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		err := client(t).Deploy(dctx, req, func(e api.DeployEvent) error {
			if e.Plan {
				plan = append(plan, e.Action)
			}
			if e.Action != "image" {
				t.Logf("deploy: %s %s %s %s %s", e.Action, e.Service, e.Machine, e.Container, e.Detail)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("deploy: %v", err)
		}
		return plan
	}

	if !t.Run("a deploy with the same values changes nothing", func(t *testing.T) {
		// The first deploy takes the service over from run (whose defaults,
		// such as the pull policy, may differ); the second is the same.
		t.Logf("first deploy's plan: %q", deploy(t, secretV1))
		checkContainers(t, secretV1, 2)
		if plan := deploy(t, secretV1); strings.Join(plan, ",") != "unchanged" {
			t.Fatalf("plan %q, want unchanged", plan)
		}
	}) {
		return
	}
	if !t.Run("a rotated secret rolls the service", func(t *testing.T) {
		before := map[string]bool{}
		for _, ci := range c.running(ctx, t, 0, "web", 2) {
			before[ci.Name] = true
		}
		if plan := deploy(t, secretV2); strings.Join(plan, ",") != "replace,replace" {
			t.Fatalf("plan %q, want replace,replace", plan)
		}
		for _, ci := range checkContainers(t, secretV2, 2) {
			if before[ci.Name] {
				t.Errorf("%s was not replaced", ci.Name)
			}
		}
		c.assertNowhere(ctx, t, envName, values)
	}) {
		return
	}
	if !t.Run("rm removes the containers' secret files", func(t *testing.T) {
		if out, err := c.uncloud(ctx, t, 0, "rm", "web"); err != nil {
			t.Fatalf("rm: %v\n%s", err, out)
		}
		for _, h := range c.hosts {
			ents, err := os.ReadDir(filepath.Join(h.Dir, "secrets"))
			if err != nil || len(ents) != 0 {
				t.Errorf("%s: secrets dir after rm: %v %v", h.Name, ents, err)
			}
		}
	}) {
		return
	}
	t.Run("machine rm: the secret is re-wrapped without the removed machine, and named for rotation", func(t *testing.T) {
		ids := map[string]string{}
		for _, m := range c.machines(ctx, t, 0) {
			ids[m.Name] = m.ID
		}
		from := c.procs[0].LogLen()
		if out, err := c.uncloud(ctx, t, 0, "machine", "rm", "m2"); err != nil {
			t.Fatalf("machine rm: %v\n%s", err, out)
		}
		eventuallyE2E(t, "api_key sealed for m1 alone", 60*time.Second, func() error {
			var es []struct {
				Key   string `json:"key"`
				Value struct {
					SealedFor []string `json:"sealed_for"`
					Exposed   []string `json:"exposed"`
				} `json:"value"`
			}
			if err := c.ucJSON(ctx, t, 0, &es, "state", "ls", "/secrets/", "-o", "json"); err != nil {
				return err
			}
			for _, e := range es {
				if e.Key != "/secrets/api_key" {
					continue
				}
				if strings.Join(e.Value.SealedFor, ",") != ids["m1"] || !slices.Contains(e.Value.Exposed, ids["m2"]) {
					return fmt.Errorf("sealed for %v, exposed to %v", e.Value.SealedFor, e.Value.Exposed)
				}
				return nil
			}
			return fmt.Errorf("no /secrets/api_key in %+v", es)
		})
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := c.procs[0].WaitLog(wctx, from, "rotate it"); err != nil {
			t.Errorf("m1 does not say the secret needs a rotation: %v", err)
		}
	})
}

func randHex(t *testing.T) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// assertNowhere fails if any of values is in what uncloud keeps or shows
// on any host. name (an env name) must be in the store, so the search of
// the badger files is shown to find what is there.
func (c *containerLab) assertNowhere(ctx context.Context, t *testing.T, name string, values []string) {
	t.Helper()
	look := func(where string, b []byte) {
		t.Helper()
		for _, v := range values {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s holds a value in clear (%s…)", where, v[:12])
			}
		}
	}
	for i, h := range c.hosts {
		nameSeen, files := false, 0
		root := filepath.Join(h.Dir, "lib") // the host's /var/lib/uncloud: badger files under state/
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files++
			look(p, b)
			nameSeen = nameSeen || bytes.Contains(b, []byte(name))
			return nil
		})
		if err != nil {
			t.Fatalf("walk %s: %v", root, err)
		}
		if !nameSeen {
			t.Errorf("%s: the env name %s is in none of %d files under %s: the search would not find a value either", h.Name, name, files, root)
		}
		look(h.Name+"'s agent log", []byte(c.procs[i].Log()))
		for _, args := range [][]string{{"state", "ls", "-o", "json"}, {"state", "ls"}, {"ps", "-o", "json"}, {"inspect", "web"}, {"ls", "-o", "json"}} {
			out, err := c.uncloud(ctx, t, i, args...)
			if err != nil {
				t.Errorf("%s: %v: %v\n%s", h.Name, args, err, out)
			}
			look(fmt.Sprintf("%s: uncloud %s", h.Name, strings.Join(args, " ")), []byte(out))
			if args[0] == "inspect" && !strings.Contains(out, name) {
				t.Errorf("%s: inspect does not name %s:\n%s", h.Name, name, out)
			}
		}
		cs, err := c.engines[i].Client.ContainerList(ctx, container.ListOptions{All: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, ci := range cs {
			for k, v := range ci.Labels {
				look(fmt.Sprintf("%s: docker label %s of %s", h.Name, k, ci.Names), []byte(v))
			}
		}
	}
}
