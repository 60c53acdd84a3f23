package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
)

// TestContexts: a user's laptop (a lab host without an agent) reaches a
// 3-machine network over real OpenSSH sshd in each machine's namespace
// through a context made with m1 alone. The first command learns m2 and
// m3 from m1 (their underlay addresses, as m1's WireGuard sees them);
// then m1 goes down (agent and sshd killed) and the next command reaches
// a learned machine, saying so in one line.
func TestContexts(t *testing.T) {
	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		t.Skip("sshd not installed (scripts/test installs openssh-server)")
	}
	ctx := context.Background()
	f := form(ctx, t, 3, nil)
	f.waitAllAlive(ctx, t, time.Minute)
	lap, err := f.lab.AddHost(ctx, "lap", lab.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}

	home := filepath.Join(lap.Dir, "home")
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	userKey := writeSSHKey(t, filepath.Join(home, ".ssh", "id_ed25519"))
	os.MkdirAll("/run/sshd", 0o755) // sshd's privilege-separation directory
	var known bytes.Buffer
	sshds := make([]*lab.Process, len(f.hosts))
	for i, h := range f.hosts {
		hostKey := writeSSHKey(t, filepath.Join(h.Dir, "ssh_host_ed25519"))
		os.WriteFile(filepath.Join(h.Dir, "authorized_keys"), ssh.MarshalAuthorizedKey(userKey), 0o600)
		cfg := filepath.Join(h.Dir, "sshd_config")
		os.WriteFile(cfg, fmt.Appendf(nil, `Port 22
ListenAddress %s
HostKey %s/ssh_host_ed25519
AuthorizedKeysFile %s/authorized_keys
PidFile %s/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
`, h.Addr, h.Dir, h.Dir, h.Dir), 0o600)
		if sshds[i], err = h.Start("sshd", sshd, "-D", "-e", "-f", cfg); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&known, "%s %s", h.Addr, ssh.MarshalAuthorizedKey(hostKey))
	}
	os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), known.Bytes(), 0o600)

	// uncloud on the laptop, as its user: HOME and the config dir there.
	cli := func(args ...string) (stdout, stderr string, err error) {
		env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "SSH_AUTH_SOCK=", "UNCLOUD_CONNECT="}
		cmd := lap.Command(ctx, "env", append(append(env, f.lab.Uncloud), args...)...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		if err != nil {
			err = fmt.Errorf("uncloud %s: %w: %s", strings.Join(args, " "), err, e.String())
		}
		return o.String(), e.String(), err
	}
	m1 := "ssh://root@" + f.hosts[0].Addr.String()
	if _, _, err := cli("context", "add", "prod", m1, "--use"); err != nil {
		t.Fatal(err)
	}
	// sshd may still be starting: the first command is retried briefly.
	var out, stderr string
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := testkit.Poll(pctx, "machine ls through m1's sshd", func() error {
		out, stderr, err = cli("machine", "ls")
		return err
	}); err != nil {
		t.Fatalf("%v\nm1 sshd log:\n%s", err, sshds[0].Log())
	}
	if stderr != "" || !strings.Contains(out, "m2") || !strings.Contains(out, "m3") {
		t.Fatalf("machine ls through m1: stderr %q, stdout:\n%s", stderr, out)
	}

	out, _, err = cli("context", "ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var cs []struct {
		Name    string   `json:"name"`
		Targets []string `json:"targets"`
		Learned []struct{ Machine, Target string }
	}
	if err := json.Unmarshal([]byte(out), &cs); err != nil || len(cs) != 1 {
		t.Fatalf("context ls -o json: %v\n%s", err, out)
	}
	want := fmt.Sprintf("[{m2 ssh://root@%s} {m3 ssh://root@%s}]", f.hosts[1].Addr, f.hosts[2].Addr)
	if got := fmt.Sprint(cs[0].Learned); got != want || len(cs[0].Targets) != 1 || cs[0].Targets[0] != m1 {
		t.Fatalf("after one command: targets %v, learned %s; want [%s] and %s", cs[0].Targets, got, m1, want)
	}
	table, _, _ := cli("context", "ls")
	t.Logf("context ls:\n%s", table)

	// m1 goes down: its agent and its sshd.
	for _, p := range []*lab.Process{f.procs[0], sshds[0]} {
		p.Signal(syscall.SIGKILL)
		p.Wait(ctx)
	}
	out, stderr, err = cli("machine", "ls")
	if err != nil {
		t.Fatalf("with m1 down: %v", err)
	}
	wantLine := fmt.Sprintf("%s did not answer: connect: connection refused; trying m2 (ssh://root@%s)\n", m1, f.hosts[1].Addr)
	if stderr != wantLine || !strings.Contains(out, "m1") {
		t.Fatalf("with m1 down: stderr %q, want %q; stdout:\n%s", stderr, wantLine, out)
	}
	t.Logf("with m1 down, stderr: %s", strings.TrimSpace(stderr))
}

func writeSSHKey(t *testing.T, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	p, _ := ssh.NewPublicKey(pub)
	return p
}
