package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/internal/testkit/sshd"
)

// TestContextOverSSH: contexts over a real OpenSSH sshd on loopback
// (Debian's openssh-server, as api's TestClientOverSSH), with the user's
// ~/.ssh in a temp HOME. A context whose first machine is down (nothing
// listens on its port) reaches the second and says so in one line; a
// context whose only user target is down reaches a learned one.
func TestContextOverSSH(t *testing.T) {
	dir, home, srv := sshHome(t, "id_ed25519")
	port, downPort := srv.Port, sshd.FreePort(t)

	sock := serveAgentAt(t, filepath.Join(dir, "agent.sock"), contextAgent{name: "m2"})
	down := fmt.Sprintf("ssh://root@127.0.0.1:%d%s", downPort, sock)
	up := fmt.Sprintf("ssh://root@127.0.0.1:%d%s", port, sock)
	// The same sshd under a name known_hosts does not list: refused, as
	// a learned machine the user never reached with ssh(1) would be.
	stranger := fmt.Sprintf("ssh://root@localhost:%d%s", port, sock)
	s := contextStore{dir: filepath.Join(home, ".config", "uncloud")}
	err := s.save(contextFile{Contexts: []contextEntry{
		{Name: "prod", Targets: []string{down, up}, LearnedAt: time.Now()},
		{Name: "stranger", Targets: []string{stranger, up}, LearnedAt: time.Now()},
		{Name: "lost", Targets: []string{down}, Learned: []learnedTarget{{Machine: "m2", Target: up}}, LearnedAt: time.Now()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ context, say string }{
		{"prod", down + " did not answer: connect: connection refused"},
		{"lost", down + " did not answer: connect: connection refused"},
		{"stranger", stranger + " did not answer: its host key is not in known_hosts (connect once with ssh(1) to check and add it)"},
	} {
		var stderr bytes.Buffer
		g := &globals{contexts: &s, Context: tc.context, Stderr: &stderr}
		c, err := g.client()
		if err != nil {
			t.Fatalf("%s: %v\nsshd:\n%s", tc.context, err, srv.Logs())
		}
		st, err := c.Status(context.Background())
		c.Close()
		if err != nil || st.Name != "m2" {
			t.Fatalf("%s: reached %q (%v), want m2", tc.context, st.Name, err)
		}
		line := strings.TrimSuffix(stderr.String(), "\n")
		next := up
		if tc.context == "lost" {
			next = "m2 (" + up + ")"
		}
		if strings.Count(line, "\n") != 0 || line != tc.say+"; trying "+next {
			t.Fatalf("%s: stderr %q", tc.context, stderr.String())
		}
		t.Logf("%s: %s", tc.context, line)
	}
}
