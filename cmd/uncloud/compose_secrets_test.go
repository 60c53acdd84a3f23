package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/uncloud-mesh/uncloud/api"
)

func loadProject(t *testing.T, dir, yaml string, env map[string]string) *types.Project {
	t.Helper()
	p := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	proj, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{WorkingDir: dir,
		ConfigFiles: []types.ConfigFile{{Filename: p}}, Environment: env},
		func(o *loader.Options) { o.SetProjectName("test", false) })
	if err != nil {
		t.Fatal(err)
	}
	return proj
}

func TestComposeSecrets(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "db_password.txt"), []byte("from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	proj := loadProject(t, dir, `
services:
  app:
    image: app:1
    secrets:
      - db_password
      - source: api_key
        target: key
        uid: "1000"
        gid: "1000"
        mode: 0400
      - shared
    configs:
      - app_conf
      - source: nginx
        target: /etc/nginx/nginx.conf
secrets:
  db_password:
    file: ./db_password.txt
  api_key:
    environment: API_KEY
  shared:
    external: true
configs:
  app_conf:
    content: "port=80"
  nginx:
    file: ./db_password.txt
`, map[string]string{"API_KEY": "from-env"})
	var req api.RunRequest
	warnings, err := composeSecrets(proj, proj.Services["app"], &req)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("composeSecrets: %v %q", err, warnings)
	}
	// Stored as Compose names them (<project>_<name>), mounted by the
	// service's name for them.
	want := []api.FileSpec{
		{Kind: "secret", Name: "test_db_password", Target: "/run/secrets/db_password"},
		{Kind: "secret", Name: "test_api_key", Target: "key", UID: 1000, GID: 1000, Mode: 0o400},
		{Kind: "secret", Name: "shared", Target: "/run/secrets/shared"},
		{Kind: "config", Name: "test_app_conf", Target: "app_conf"},
		{Kind: "config", Name: "test_nginx", Target: "/etc/nginx/nginx.conf"},
	}
	if len(req.Files) != len(want) {
		t.Fatalf("files %+v", req.Files)
	}
	for i := range want {
		if req.Files[i] != want[i] {
			t.Errorf("file %d: %+v, want %+v", i, req.Files[i], want[i])
		}
	}
	got := map[string]string{}
	for _, s := range req.Secrets {
		got[s.Kind+"/"+s.Name] = string(s.Data)
	}
	wantData := map[string]string{"secret/test_db_password": "from-file", "secret/test_api_key": "from-env",
		"config/test_app_conf": "port=80", "config/test_nginx": "from-file"}
	if len(got) != len(wantData) {
		t.Errorf("contents %v", got)
	}
	for k, v := range wantData {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// Never printed by accident.
	for _, s := range req.Secrets {
		if strings.Contains(s.String(), string(s.Data)) {
			t.Errorf("String() shows the content: %s", s)
		}
	}
}

func TestComposeSecretsErrors(t *testing.T) {
	dir := t.TempDir()
	proj := loadProject(t, dir, `
services:
  app:
    image: app:1
    secrets: [missing_env]
  other:
    image: app:1
    secrets: [nofile]
secrets:
  missing_env:
    environment: NOPE
  nofile:
    file: ./absent.txt
`, nil)
	for name, want := range map[string]string{"app": "NOPE is not set", "other": "absent.txt"} {
		var req api.RunRequest
		if _, err := composeSecrets(proj, proj.Services[name], &req); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, want)
		}
	}
}
