package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestClientOverSSH reaches an agent socket through a real OpenSSH sshd
// (Debian's openssh-server) on loopback, as `--connect ssh://` does.
func TestClientOverSSH(t *testing.T) {
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if sshd = "/usr/sbin/sshd"; !fileExists(sshd) {
			t.Skip("sshd not installed (scripts/test installs openssh-server)")
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: sshd checks ownership of its files and logs in as root here")
	}
	dir, err := os.MkdirTemp("", "uncloud-ssh-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.MkdirAll("/run/sshd", 0o755) // sshd's privilege-separation directory

	hostKey := writeKey(t, filepath.Join(dir, "host_ed25519"))
	userKey := writeKey(t, filepath.Join(dir, "user_ed25519"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(userKey), 0o600)

	port := freePort(t)
	cfg := fmt.Sprintf(`Port %d
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
`, port, dir, dir, dir)
	cfgPath := filepath.Join(dir, "sshd_config")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	cmd := exec.Command(sshd, "-D", "-e", "-f", cfgPath)
	var logs strings.Builder
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", port), &logs)

	sock := filepath.Join(dir, "agent.sock")
	ln, err := ListenUnix(context.Background(), sock, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "agent says hi") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	known := filepath.Join(dir, "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%d %s", port, ssh.MarshalAuthorizedKey(hostKey))
	os.WriteFile(known, []byte(line), 0o600)

	opts := SSHOptions{KnownHostsFile: known, IdentityFiles: []string{filepath.Join(dir, "user_ed25519")}, AgentSocket: "/nonexistent"}
	target := fmt.Sprintf("ssh://root@127.0.0.1:%d%s", port, sock)
	c, err := NewClient(target, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.HTTP.Get(c.BaseURL + "/")
	if err != nil {
		t.Fatalf("GET through ssh: %v\nsshd log:\n%s", err, logs.String())
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "agent says hi" {
		t.Fatalf("got %q", b)
	}

	// A host whose key is not in known_hosts is refused: no trust on first use.
	os.WriteFile(known, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", port, ssh.MarshalAuthorizedKey(userKey))), 0o600)
	c2, err := NewClient(target, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.HTTP.Get(c2.BaseURL + "/"); err == nil || !strings.Contains(err.Error(), "key mismatch") {
		t.Fatalf("wrong host key: error = %v, want a key mismatch", err)
	}
}

func writeKey(t *testing.T, path string) ssh.PublicKey {
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

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListening(t *testing.T, addr string, logs *strings.Builder) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("sshd never listened on %s:\n%s", addr, logs.String())
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
