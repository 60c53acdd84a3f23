package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestDockerCredentials(t *testing.T) {
	dir := t.TempDir()
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cfg := map[string]any{"auths": map[string]any{
		"reg.example.com:5000":        map[string]string{"auth": enc("alice:pw1")},
		"https://index.docker.io/v1/": map[string]string{"auth": enc("bob:pw2")},
		"ghcr.io":                     map[string]string{"identitytoken": "tok"},
	}}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	d := dockerCredentials{dir: dir}
	for _, tc := range []struct {
		image, user, password, token string
		none                         bool
	}{
		{image: "reg.example.com:5000/team/app:1", user: "alice", password: "pw1"},
		{image: "nginx:1.27", user: "bob", password: "pw2"},
		{image: "docker.io/library/nginx", user: "bob", password: "pw2"},
		{image: "ghcr.io/o/app@sha256:0000000000000000000000000000000000000000000000000000000000000000", token: "tok"},
		{image: "other.example.com/app", none: true},
	} {
		a, err := d.forImage(tc.image)
		if err != nil {
			t.Fatalf("%s: %v", tc.image, err)
		}
		if tc.none {
			if a != nil {
				t.Errorf("%s: credentials %v for a registry the config does not name", tc.image, a)
			}
			continue
		}
		if a == nil || a.Username != tc.user || a.Password != tc.password || a.IdentityToken != tc.token {
			t.Errorf("%s: got %#v", tc.image, a)
		}
	}
	if _, err := d.forImage("UPPER/Case"); err == nil {
		t.Error("a malformed image reference gave no error")
	}
	all, err := d.forImages([]string{"nginx", "reg.example.com:5000/a", "reg.example.com:5000/b", "quay.io/x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all["docker.io"].Username != "bob" || all["reg.example.com:5000"].Username != "alice" {
		t.Errorf("forImages = %v", all)
	}
}
