// Package sshd runs a real OpenSSH sshd (Debian's openssh-server) for
// tests: a generated host key, the authorized keys a test gives, on
// loopback or inside a lab host's namespace. It is imported by tests only.
package sshd

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Options say where the sshd runs and whom it lets in.
type Options struct {
	// Dir holds its config, host key and authorized keys; default a new
	// temporary directory. Starting again in the same Dir keeps the host
	// key unless NewHostKey.
	Dir        string
	NewHostKey bool
	// ListenAddr and Port: default 127.0.0.1 and a free port there.
	ListenAddr string
	Port       int
	// AuthorizedKeys may log in, as root or any user (one file for all).
	AuthorizedKeys []ssh.PublicKey
	// Env is set in every session (sshd_config SetEnv), e.g. a lab
	// host's DOCKER_HOST, which sshd would not pass on from its own.
	Env []string
	// Command makes the command that runs the sshd, e.g. in a lab host's
	// namespace (lab.Host.Command); default exec.Command.
	Command func(name string, args ...string) *exec.Cmd
}

// Server is a running sshd.
type Server struct {
	Dir     string
	Addr    string // host:port
	Port    int
	HostKey ssh.PublicKey

	cmd  *exec.Cmd
	logs *syncBuffer
	once sync.Once
}

// Binary is sshd's path; the test is skipped without it or without root
// (sshd checks its files' ownership and logs users in).
func Binary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("sshd")
	if err != nil {
		if p = "/usr/sbin/sshd"; !exists(p) {
			t.Skip("sshd not installed (scripts/test installs openssh-server)")
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: sshd checks ownership of its files and logs users in")
	}
	return p
}

// Start starts an sshd and waits until it listens; it stops at the end
// of the test.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin := Binary(t)
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "uncloud-sshd-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		o.Dir = d
	}
	// Other users read authorized_keys (sshd reads it as the user logging
	// in); the host key stays 0600.
	if err := os.Chmod(o.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if o.ListenAddr == "" {
		o.ListenAddr = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = FreePort(t)
	}
	if o.Command == nil {
		o.Command = exec.Command
	}
	os.MkdirAll("/run/sshd", 0o755) // its privilege-separation directory

	keyPath := filepath.Join(o.Dir, "ssh_host_ed25519_key")
	var hostKey ssh.PublicKey
	if b, err := os.ReadFile(keyPath); err == nil && !o.NewHostKey {
		signer, err := ssh.ParsePrivateKey(b)
		if err != nil {
			t.Fatal(err)
		}
		hostKey = signer.PublicKey()
	} else {
		hostKey = WriteKey(t, keyPath)
	}
	var auth bytes.Buffer
	for _, k := range o.AuthorizedKeys {
		auth.Write(ssh.MarshalAuthorizedKey(k))
	}
	write(t, filepath.Join(o.Dir, "authorized_keys"), auth.Bytes(), 0o644)
	cfg := filepath.Join(o.Dir, "sshd_config")
	write(t, cfg, fmt.Appendf(nil, `Port %d
ListenAddress %s
HostKey %s
AuthorizedKeysFile %s
PidFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
Subsystem sftp internal-sftp
%s`, o.Port, o.ListenAddr, keyPath, filepath.Join(o.Dir, "authorized_keys"), filepath.Join(o.Dir, "sshd.pid"), setEnv(o.Env)), 0o600)

	s := &Server{Dir: o.Dir, Port: o.Port, HostKey: hostKey, Addr: net.JoinHostPort(o.ListenAddr, fmt.Sprint(o.Port)), logs: &syncBuffer{}}
	s.cmd = o.Command(bin, "-D", "-e", "-f", cfg)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	t.Cleanup(s.Stop)
	// It says so once it listens; this works inside a namespace the test
	// process cannot dial into.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(s.logs.String(), "Server listening on") {
		if time.Now().After(deadline) {
			s.Stop()
			t.Fatalf("sshd never listened on %s:\n%s", s.Addr, s.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// Stop kills the sshd (a connection it serves dies with it).
func (s *Server) Stop() {
	s.once.Do(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	})
}

// Logs is what sshd printed (-e: its log on stderr).
func (s *Server) Logs() string { return s.logs.String() }

// KnownHostsLine is the server's line for ~/.ssh/known_hosts, under the
// name a client dials ([addr]:port unless the port is 22).
func (s *Server) KnownHostsLine() string {
	host := strings.TrimSuffix(strings.TrimPrefix(s.Addr, "["), "]")
	if h, p, err := net.SplitHostPort(s.Addr); err == nil {
		host = h
		if p != "22" {
			host = "[" + h + "]:" + p
		}
	}
	return host + " " + string(ssh.MarshalAuthorizedKey(s.HostKey))
}

// WriteKey writes a new unencrypted Ed25519 private key (OpenSSH format,
// mode 0600) and returns its public key.
func WriteKey(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, pem.EncodeToMemory(block), 0o600)
	p, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ClientHome makes dir/home with an empty .ssh (0700) for the client
// side of a test, and writes a new user key there as .ssh/keyName.
func ClientHome(t testing.TB, dir, keyName string) (home string, key ssh.PublicKey) {
	t.Helper()
	home = filepath.Join(dir, "home")
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	return home, WriteKey(t, filepath.Join(home, ".ssh", keyName))
}

// FreePort is a TCP port free on 127.0.0.1 right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func write(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // an existing file keeps its mode otherwise
		t.Fatal(err)
	}
}

func setEnv(env []string) string {
	if len(env) == 0 {
		return ""
	}
	return "SetEnv " + strings.Join(env, " ") + "\n"
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// syncBuffer is a bytes.Buffer the sshd writes and the test reads at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
