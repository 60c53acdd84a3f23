package runtime

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFileRefTargets(t *testing.T) {
	for _, tc := range []struct {
		f    FileRef
		want string
	}{
		{FileRef{Kind: "secret", Name: "db"}, "/run/secrets/db"},
		{FileRef{Kind: "secret", Name: "db", Target: "pw"}, "/run/secrets/pw"},
		{FileRef{Kind: "config", Name: "app.conf"}, "/app.conf"},
		{FileRef{Kind: "config", Name: "app.conf", Target: "/etc/app/app.conf"}, "/etc/app/app.conf"},
	} {
		if got := tc.f.TargetPath(); got != tc.want {
			t.Errorf("%+v: target %q, want %q", tc.f, got, tc.want)
		}
	}
}

func TestSealedSpecValidate(t *testing.T) {
	base := ContainerSpec{Service: "web", Image: "nginx"}
	for _, tc := range []struct {
		name string
		edit func(*ContainerSpec)
		ok   bool
	}{
		{"names and sealed", func(s *ContainerSpec) { s.EnvNames, s.EnvSealed = []string{"A"}, []byte{2} }, true},
		{"plain and sealed mixed", func(s *ContainerSpec) { s.Env, s.EnvSealed = []string{"A=1"}, []byte{2} }, false},
		{"name with =", func(s *ContainerSpec) { s.EnvNames = []string{"A=1"} }, false},
		{"secret", func(s *ContainerSpec) { s.Files = []FileRef{{Kind: "secret", Name: "db", Version: "v"}} }, true},
		{"no version", func(s *ContainerSpec) { s.Files = []FileRef{{Kind: "secret", Name: "db"}} }, false},
		{"bad kind", func(s *ContainerSpec) { s.Files = []FileRef{{Kind: "blob", Name: "db", Version: "v"}} }, false},
		{"name escaping", func(s *ContainerSpec) { s.Files = []FileRef{{Kind: "secret", Name: "../db", Version: "v"}} }, false},
		{"target escaping", func(s *ContainerSpec) {
			s.Files = []FileRef{{Kind: "config", Name: "c", Version: "v", Target: "/etc/../x"}}
		}, false},
		{"same target twice", func(s *ContainerSpec) {
			s.Files = []FileRef{{Kind: "secret", Name: "a", Version: "v", Target: "/x"}, {Kind: "config", Name: "b", Version: "v", Target: "/x"}}
		}, false},
	} {
		s := base
		tc.edit(&s)
		err := s.Validate()
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrBadSpec)) {
			t.Errorf("%s: Validate = %v", tc.name, err)
		}
	}
}

// TestPublic: the shown and labelled spec has names, no value, no ciphertext.
func TestPublic(t *testing.T) {
	s := ContainerSpec{Service: "web", Image: "nginx", Env: []string{"PW=hunter2", "X=1"}}
	p := s.Public()
	if len(p.Env) != 0 || strings.Join(p.EnvNames, ",") != "PW,X" {
		t.Errorf("public of a plain spec: env %q names %q", p.Env, p.EnvNames)
	}
	sealed := ContainerSpec{Service: "web", Image: "nginx", EnvNames: []string{"PW"}, EnvVersion: "v1", EnvSealed: []byte("ciphertext")}
	b := PublicJSON(mustJSON(t, sealed))
	if strings.Contains(string(b), "env_sealed") || !strings.Contains(string(b), `"PW"`) || !strings.Contains(string(b), "v1") {
		t.Errorf("public JSON %s", b)
	}
}

// TestWriteFiles: a container's files sit in its own 0700 directory with
// the asked mode and owner, mounted read-only, and go with it.
func TestWriteFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	r := &Runtime{cfg: Config{SecretsDir: dir, MachineName: "m1"}}
	files := []FileRef{{Kind: "secret", Name: "db", Version: "v"}, {Kind: "config", Name: "c", Version: "v", Target: "/etc/c", Mode: 0o440, UID: os.Getuid(), GID: os.Getgid()}}
	opened := Opened{Files: map[string][]byte{"secret/db": []byte("pw"), "config/c": []byte("conf")}}
	ms, err := r.writeFiles("web-1", files, opened)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || !ms[0].ReadOnly || ms[0].Target != "/run/secrets/db" || ms[1].Target != "/etc/c" {
		t.Fatalf("mounts %+v", ms)
	}
	if st, err := os.Stat(filepath.Join(dir, "web-1")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("container directory: %v %v", st.Mode(), err)
	}
	if b, err := os.ReadFile(ms[0].Source); err != nil || string(b) != "pw" {
		t.Errorf("secret file %q %v", b, err)
	}
	if st, _ := os.Stat(ms[0].Source); st.Mode().Perm() != 0o444 {
		t.Errorf("secret mode %v, want 0444 (Compose's default)", st.Mode().Perm())
	}
	if st, _ := os.Stat(ms[1].Source); st.Mode().Perm() != 0o440 {
		t.Errorf("config mode %v, want 0440", st.Mode().Perm())
	}
	if _, err := r.writeFiles("web-1", files, opened); !errors.Is(err, ErrNameTaken) {
		t.Errorf("a second container of that name: %v", err)
	}
	if _, err := r.writeFiles("web-2", files, Opened{}); !errors.Is(err, ErrBadSpec) {
		t.Errorf("files not opened: %v", err)
	}
	r.removeFiles("web-1")
	if _, err := os.Stat(filepath.Join(dir, "web-1")); !os.IsNotExist(err) {
		t.Errorf("directory after removal: %v", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPruneFiles: the files of a container that is gone go at the next
// full pass, unless they are new (a container being created).
func TestPruneFiles(t *testing.T) {
	dir := t.TempDir()
	r := &Runtime{cfg: Config{SecretsDir: dir}, log: slog.Default()}
	for _, n := range []string{"live", "gone", "fresh"} {
		if err := os.Mkdir(filepath.Join(dir, n), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Hour)
	for _, n := range []string{"live", "gone"} {
		if err := os.Chtimes(filepath.Join(dir, n), old, old); err != nil {
			t.Fatal(err)
		}
	}
	r.pruneFiles([]*Container{{Name: "live"}})
	for n, want := range map[string]bool{"live": true, "gone": false, "fresh": true} {
		if _, err := os.Stat(filepath.Join(dir, n)); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", n, err == nil, want)
		}
	}
}
