package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestResolveSSH(t *testing.T) {
	home := t.TempDir()
	cfg := filepath.Join(home, "config")
	os.WriteFile(cfg, []byte(`
Host pi-1
  HostName 192.0.2.7
  User pi
  Port 2222
  IdentityFile ~/.ssh/pi_ed25519
  IdentityFile keys/second

Host *.lab
  HostName %h.example.net
  User ops

Host *
  User fallback
`), 0o600)
	t.Setenv("USER", "me")
	for _, tc := range []struct {
		target, config string
		want           SSHTarget
	}{
		{"ssh://pi-1", cfg, SSHTarget{HostName: "192.0.2.7", User: "pi", Port: "2222",
			IdentityFiles: []string{filepath.Join(home, ".ssh/pi_ed25519"), filepath.Join(home, ".ssh/keys/second")}}},
		// The URL's user and port win, as ssh(1)'s command line does.
		{"ssh://root@pi-1:22/run/u.sock", cfg, SSHTarget{HostName: "192.0.2.7", User: "root", Port: "22",
			IdentityFiles: []string{filepath.Join(home, ".ssh/pi_ed25519"), filepath.Join(home, ".ssh/keys/second")}}},
		{"ssh://db.lab", cfg, SSHTarget{HostName: "db.lab.example.net", User: "ops", Port: "22"}},
		{"ssh://203.0.113.1", cfg, SSHTarget{HostName: "203.0.113.1", User: "fallback", Port: "22"}},
		{"ssh://203.0.113.1", "none", SSHTarget{HostName: "203.0.113.1", User: "me", Port: "22"}},
		{"ssh://203.0.113.1", filepath.Join(home, "missing"), SSHTarget{HostName: "203.0.113.1", User: "me", Port: "22"}},
	} {
		u, _ := url.Parse(tc.target)
		got, err := resolveSSH(u, tc.config, home)
		if err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		if got.HostName != tc.want.HostName || got.User != tc.want.User || got.Port != tc.want.Port || !slices.Equal(got.IdentityFiles, tc.want.IdentityFiles) {
			t.Errorf("%s with %s:\n got %+v\nwant %+v", tc.target, filepath.Base(tc.config), got, tc.want)
		}
	}
	// A file too big to be a config is refused, named.
	big := filepath.Join(home, "big")
	os.WriteFile(big, make([]byte, maxSSHConfig+1), 0o600)
	if _, err := ResolveSSH("ssh://x", big); err == nil || !strings.Contains(err.Error(), big) {
		t.Fatalf("a %d-byte config: %v", maxSSHConfig+1, err)
	}
	if _, err := ResolveSSH("unix:///x", cfg); err == nil {
		t.Fatal("a unix target resolved as ssh")
	}
}

// TestClientOverSSHConfigAlias: `--connect ssh://ALIAS/socket` reaches the
// agent through a real sshd with HostName, User, Port and IdentityFile
// taken from the ssh config, as ssh(1) would.
func TestClientOverSSHConfigAlias(t *testing.T) {
	d := startSSHD(t)
	sock := filepath.Join(d.dir, "agent.sock")
	ln, err := ListenUnix(context.Background(), sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "agent says hi") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	cfg := filepath.Join(d.dir, "ssh_config")
	os.WriteFile(cfg, fmt.Appendf(nil, "Host lab-box\n  HostName 127.0.0.1\n  User root\n  Port %d\n  IdentityFile %s\n",
		d.port, filepath.Join(d.dir, "user_ed25519")), 0o600)
	opts := SSHOptions{KnownHostsFile: d.opts.KnownHostsFile, AgentSocket: "/nonexistent", ConfigFile: cfg} // no key but the config's
	c, err := NewClient("ssh://lab-box"+sock, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.HTTP.Get(c.BaseURL + "/")
	if err != nil {
		t.Fatalf("GET through the alias: %v\nsshd log:\n%s", err, d.logs.String())
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "agent says hi" {
		t.Fatalf("got %q", b)
	}
	// Without the config the alias is no host at all.
	opts.ConfigFile = "none"
	c2, err := NewClient("ssh://lab-box"+sock, opts)
	if err == nil {
		defer c2.Close()
		if _, err := c2.HTTP.Get(c2.BaseURL + "/"); err == nil {
			t.Fatal("the alias worked without the config")
		}
	}
}
