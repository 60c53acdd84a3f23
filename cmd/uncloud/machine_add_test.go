package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRemoteInstallSteps runs machine add's SSH steps against a real
// sshd on loopback (no agent, so no lab): login through a ~/.ssh/config
// alias with its IdentityFile, the upload checked by SHA-256 on the far
// side (and skipped when the same binary is there), and the membership
// check finding a data dir.
func TestRemoteInstallSteps(t *testing.T) {
	dir, home, srv := sshHome(t, "box_key")
	os.WriteFile(filepath.Join(home, ".ssh", "config"), fmt.Appendf(nil,
		"Host box\n  HostName 127.0.0.1\n  User root\n  Port %d\n  IdentityFile ~/.ssh/box_key\n", srv.Port), 0o600)

	remote := filepath.Join(dir, "remote")
	c := remoteInstallFlags{Host: "box", RemoteBin: filepath.Join(remote, "bin", "uncloud"),
		RemoteDataDir: filepath.Join(remote, "data"), RemoteSocket: filepath.Join(remote, "uncloud.sock")}
	ctx := context.Background()
	r, err := c.connect(ctx)
	if err != nil {
		t.Fatalf("connect through the alias: %v\n%s", err, srv.Logs())
	}
	defer r.client.Close()
	if r.sudo != "" || r.target.Port != fmt.Sprint(srv.Port) {
		t.Fatalf("resolved %+v, sudo %q", r.target, r.sudo)
	}

	src := filepath.Join(dir, "payload")
	os.WriteFile(src, []byte(strings.Repeat("uncloud ", 100000)), 0o755)
	bin, err := hashFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.upload(ctx, r, bin); err != nil {
		t.Fatal(err)
	}
	got, err := hashFile(c.RemoteBin)
	if err != nil || got.SHA256 != bin.SHA256 {
		t.Fatalf("uploaded %+v, %v; want %s", got, err, bin.SHA256)
	}
	fi, _ := os.Stat(c.RemoteBin)
	if fi.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if err := c.upload(ctx, r, bin); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(c.RemoteBin); !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatal("the same binary was uploaded again")
	}

	if err := c.checkNotMember(ctx, r, "net-1"); err != nil {
		t.Fatalf("a host with nothing of uncloud: %v", err)
	}
	os.MkdirAll(c.RemoteDataDir, 0o700)
	os.WriteFile(filepath.Join(c.RemoteDataDir, "machine.json"), []byte("{}"), 0o600)
	err = c.checkNotMember(ctx, r, "net-1")
	if err == nil || !strings.Contains(err.Error(), "data dir "+filepath.Join(c.RemoteDataDir, "machine.json")) {
		t.Fatalf("a host with a data dir: %v", err)
	}
}
