package runtime

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestDockerSealedValues: a container made from a sealed spec gets the
// opened env and files from Docker, its label keeps names only, its files
// go with it, and files lost (a reboot) are restored and it starts again.
func TestDockerSealedValues(t *testing.T) {
	rt := newTestRuntime(t, "sealed")
	rt.cfg.SecretsDir = filepath.Join(t.TempDir(), "secrets")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const envValue, secretValue, configValue = "env-value-7c1", "secret-value-9d2", "config-value-3e4"
	spec := ContainerSpec{Service: "web", Image: testimage.Tag, EnvNames: []string{"PW"}, EnvVersion: "v1", EnvSealed: []byte("ciphertext"),
		Files: []FileRef{{Kind: "secret", Name: "db", Version: "v1"}, {Kind: "config", Name: "c", Version: "v1", Target: "/etc/c"}}}
	opened := Opened{Env: []string{"PW=" + envValue}, Files: map[string][]byte{"secret/db": []byte(secretValue), "config/c": []byte(configValue)}}
	c, err := rt.CreateWith(ctx, spec, opened)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rt.InspectRaw(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range raw.Config.Labels {
		for _, secret := range []string{envValue, secretValue, configValue, "ciphertext"} {
			if strings.Contains(v, secret) {
				t.Errorf("label %s holds %q: %s", k, secret, v)
			}
		}
	}
	if !strings.Contains(raw.Config.Labels[LabelSpec], `"PW"`) {
		t.Errorf("label spec does not name the env: %s", raw.Config.Labels[LabelSpec])
	}
	get := func(path string) string {
		t.Helper()
		var body string
		eventually(t, "container answers "+path, 30*time.Second, func() error {
			body, err = httpGet(ctx, "http://"+c.Address+":8080"+path)
			return err
		})
		return body
	}
	if got := get("/env?name=PW"); got != envValue {
		t.Errorf("env PW = %q", got)
	}
	if got := get("/file?path=/run/secrets/db"); got != secretValue {
		t.Errorf("/run/secrets/db = %q", got)
	}
	if got := get("/file?path=/etc/c"); got != configValue {
		t.Errorf("/etc/c = %q", got)
	}

	// A reboot empties the tmpfs: the container cannot start without its
	// files; MissingFiles finds it and RestoreFiles brings it back.
	if err := rt.Stop(ctx, c.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(rt.cfg.SecretsDir, c.Name)); err != nil {
		t.Fatal(err)
	}
	missing, err := rt.MissingFiles(ctx)
	if err != nil || len(missing) != 1 || len(missing[c.ID].Files) != 2 {
		t.Fatalf("missing files: %v %+v", err, missing)
	}
	if err := rt.RestoreFiles(ctx, c.ID, missing[c.ID], opened); err != nil {
		t.Fatal(err)
	}
	if c, err = rt.Inspect(ctx, c.ID); err != nil || c.State != "running" {
		t.Fatalf("after the restore: %+v %v", c, err)
	}
	if got := get("/file?path=/run/secrets/db"); got != secretValue {
		t.Errorf("after the restore /run/secrets/db = %q", got)
	}
	if err := rt.Remove(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(rt.cfg.SecretsDir, c.Name)); !os.IsNotExist(err) {
		t.Errorf("files after the container's removal: %v", err)
	}
}
