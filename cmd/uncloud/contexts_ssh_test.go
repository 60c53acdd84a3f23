package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/uncloud-mesh/uncloud/api"
)

// TestContextOverSSH: contexts over a real OpenSSH sshd on loopback
// (Debian's openssh-server, as api's TestClientOverSSH), with the user's
// ~/.ssh in a temp HOME. A context whose first machine is down (nothing
// listens on its port) reaches the second and says so in one line; a
// context whose only user target is down reaches a learned one.
func TestContextOverSSH(t *testing.T) {
	sshdPath, err := exec.LookPath("sshd")
	if err != nil {
		if sshdPath = "/usr/sbin/sshd"; !fileExists(sshdPath) {
			t.Skip("sshd not installed (scripts/test installs openssh-server)")
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: sshd checks ownership of its files and logs in as root here")
	}
	dir, err := os.MkdirTemp("", "uncloud-ctx-ssh-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	home := filepath.Join(dir, "home")
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	os.MkdirAll("/run/sshd", 0o755)

	hostKey := writeTestKey(t, filepath.Join(dir, "host_ed25519"))
	userKey := writeTestKey(t, filepath.Join(home, ".ssh", "id_ed25519"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(userKey), 0o600)
	port, downPort := freeTCPPort(t), freeTCPPort(t)
	cfg := filepath.Join(dir, "sshd_config")
	os.WriteFile(cfg, fmt.Appendf(nil, `Port %d
ListenAddress 127.0.0.1
HostKey %s/host_ed25519
AuthorizedKeysFile %s/authorized_keys
PidFile %s/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
`, port, dir, dir, dir), 0o600)
	var logs bytes.Buffer
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", cfg)
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd never listened on %s:\n%s", addr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"),
		fmt.Appendf(nil, "[127.0.0.1]:%d %s", port, ssh.MarshalAuthorizedKey(hostKey)), 0o600)

	sock := serveAgentAt(t, filepath.Join(dir, "agent.sock"), contextAgent{name: "m2"})
	down := fmt.Sprintf("ssh://root@127.0.0.1:%d%s", downPort, sock)
	up := fmt.Sprintf("ssh://root@127.0.0.1:%d%s", port, sock)
	// The same sshd under a name known_hosts does not list: refused, as
	// a learned machine the user never reached with ssh(1) would be.
	stranger := fmt.Sprintf("ssh://root@localhost:%d%s", port, sock)
	s := contextStore{dir: filepath.Join(home, ".config", "uncloud")}
	err = s.save(contextFile{Contexts: []contextEntry{
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
			t.Fatalf("%s: %v\nsshd:\n%s", tc.context, err, logs.String())
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

func serveAgentAt(t *testing.T, sock string, b api.Backend) string {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.ServeLocal(ctx, ln, b) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock
}

func writeTestKey(t *testing.T, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, _ := ssh.NewPublicKey(pub)
	return sshPub
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
