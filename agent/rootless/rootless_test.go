package rootless

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSystem lays out the files Find reads under a temp root: dockerd's
// pid file next to its socket, its environment and namespaces in /proc.
type fakeProc struct {
	pidFile string // content of /run/user/1000/docker.pid; "" for none
	environ string // /proc/42/environ ("" for no process)
	userNS  string // /proc/42/ns/user link target
}

func (f fakeProc) root(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	write := func(p, content string) {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(p, target string) {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	if f.pidFile != "" {
		write("/run/user/1000/docker.pid", f.pidFile)
	}
	if f.environ != "" {
		write("/proc/42/environ", f.environ)
		link("/proc/42/ns/user", f.userNS)
		link("/proc/42/ns/net", "net:[2]")
	}
	link("/proc/self/ns/user", "user:[1]")
	link("/proc/self/ns/net", "net:[1]")
	return root
}

func TestFind(t *testing.T) {
	rootless := "PATH=/bin\x00ROOTLESSKIT_STATE_DIR=/tmp/rootlesskit123\x00HOME=/home/u\x00"
	for _, tc := range []struct {
		name       string
		proc       fakeProc
		dockerHost string
		wantErr    string // "" for found
		noEngine   bool
	}{
		{name: "found", proc: fakeProc{"42\n", rootless, "user:[7]"}},
		{name: "found by DOCKER_HOST", proc: fakeProc{"42\n", rootless, "user:[7]"}, dockerHost: "unix:///run/user/1000/docker.sock"},
		{name: "no pid file", proc: fakeProc{}, wantErr: "no /run/user/1000/docker.pid", noEngine: true},
		{name: "garbage pid", proc: fakeProc{"abc", rootless, "user:[7]"}, wantErr: "not a PID", noEngine: true},
		{name: "dockerd gone", proc: fakeProc{"42", "", ""}, wantErr: "is not running", noEngine: true},
		{name: "rootful dockerd", proc: fakeProc{"42", "PATH=/bin\x00", "user:[1]"}, wantErr: "does not run under rootlesskit", noEngine: true},
		{name: "our own user namespace", proc: fakeProc{"42", rootless, "user:[1]"}, wantErr: "shares our user namespace", noEngine: true},
		{name: "tcp docker host", proc: fakeProc{"42", rootless, "user:[7]"}, dockerHost: "tcp://10.0.0.1:2375", wantErr: "not a unix socket", noEngine: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := System{Root: tc.proc.root(t)}
			e, err := sys.Find(tc.dockerHost, 1000, "")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				want := Engine{PID: 42, Socket: "/run/user/1000/docker.sock", StateDir: "/tmp/rootlesskit123"}
				if e != want {
					t.Fatalf("got %+v, want %+v", e, want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			if errors.Is(err, ErrNoEngine) != tc.noEngine {
				t.Fatalf("errors.Is(%v, ErrNoEngine) = %v", err, !tc.noEngine)
			}
		})
	}
}

func TestInside(t *testing.T) {
	sys := System{Root: fakeProc{"42", "ROOTLESSKIT_STATE_DIR=/x\x00", "user:[7]"}.root(t)}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == EnvPID {
				return v
			}
			return ""
		}
	}
	if _, inside, err := sys.Inside(env("")); inside || err != nil {
		t.Fatalf("no %s: inside %v, %v", EnvPID, inside, err)
	}
	// The fake dockerd's network namespace differs from ours: the agent
	// must not run on as if it were beside it.
	if _, inside, err := sys.Inside(env("42")); !inside || err == nil || !strings.Contains(err.Error(), "network namespace") {
		t.Fatalf("another netns: inside %v, %v", inside, err)
	}
	if _, _, err := sys.Inside(env("43")); err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("dead dockerd: %v", err)
	}
	if _, _, err := sys.Inside(env("x")); err == nil {
		t.Fatal("a non-numeric PID was accepted")
	}
}

func TestMissing(t *testing.T) {
	all := func(string) (string, error) { return "/usr/bin/x", nil }
	none := func(p string) (string, error) { return "", exec.ErrNotFound }
	for _, tc := range []struct {
		name           string
		subuid, subgid string
		look           func(string) (string, error)
		want           []string
	}{
		{name: "everything there", subuid: "other:100000:65536\nalice:165536:65536\n", subgid: "1000:165536:65536\n", look: all},
		{name: "no ranges", subuid: "other:100000:65536\n", subgid: "", look: all,
			want: []string{"no subordinate range for user alice in /etc/subuid", "no subordinate range for user alice in /etc/subgid"}},
		{name: "empty range", subuid: "alice:165536:0\n", subgid: "alice:165536:65536\n", look: all,
			want: []string{"in /etc/subuid"}},
		{name: "no programs", subuid: "alice:1:2\n", subgid: "alice:1:2\n", look: none,
			want: []string{"no rootlesskit in PATH (apt-get install rootlesskit)", "no slirp4netns", "no newuidmap in PATH (apt-get install uidmap)", "no newgidmap", "no nsenter"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			os.MkdirAll(filepath.Join(root, "etc"), 0o755)
			os.WriteFile(filepath.Join(root, "etc/subuid"), []byte(tc.subuid), 0o644)
			os.WriteFile(filepath.Join(root, "etc/subgid"), []byte(tc.subgid), 0o644)
			got := System{Root: root}.Missing("alice", 1000, tc.look)
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %d items like %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("item %d %q lacks %q", i, got[i], w)
				}
			}
		})
	}
}
