package main

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/uncloud-mesh/uncloud/internal/testkit/sshd"
)

// sshHome starts a real sshd on loopback that trusts a new client key,
// kept as ~/.ssh/keyName in a HOME of the test's own (set, with no
// ssh-agent) whose known_hosts trusts the server. It returns the
// temporary dir the home is in (for the test's other files), the home
// and the server.
func sshHome(t *testing.T, keyName string) (dir, home string, srv *sshd.Server) {
	t.Helper()
	sshd.Binary(t)
	dir = t.TempDir()
	home, key := sshd.ClientHome(t, dir, keyName)
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	srv = sshd.Start(t, sshd.Options{AuthorizedKeys: []ssh.PublicKey{key}})
	if err := os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(srv.KnownHostsLine()), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, home, srv
}
