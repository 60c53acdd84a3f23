package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/internal/testkit/sshd"
)

// TestContexts: a user's laptop (a lab host without an agent) reaches a
// 3-machine network over real OpenSSH sshd in each machine's namespace
// through a context made with m1 alone. The first command learns m2 and
// m3 from m1 (their underlay addresses, as m1's WireGuard sees them);
// then m1 goes down (agent and sshd killed) and the next command reaches
// a learned machine, saying so in one line.
func TestContexts(t *testing.T) {
	sshd.Binary(t)
	ctx := context.Background()
	f := form(ctx, t, 3, nil)
	f.waitAllAlive(ctx, t, time.Minute)
	lap, err := f.lab.AddHost(ctx, "lap", lab.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}

	home, userKey := sshd.ClientHome(t, lap.Dir, "id_ed25519")
	var known bytes.Buffer
	sshds := make([]*sshd.Server, len(f.hosts))
	for i, h := range f.hosts {
		sshds[i] = startLabSSHD(ctx, t, h, userKey)
		known.WriteString(sshds[i].KnownHostsLine())
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
		t.Fatalf("%v\nm1 sshd log:\n%s", err, sshds[0].Logs())
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
	f.procs[0].Signal(syscall.SIGKILL)
	f.procs[0].Wait(ctx)
	sshds[0].Stop()
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

// startLabSSHD runs a real sshd on port 22 of h's lab address, in its
// namespace (so commands it runs see the host's private directories),
// letting in userKey as root or any user; its files are in h.Dir/sshd.
func startLabSSHD(ctx context.Context, t *testing.T, h *lab.Host, userKey ssh.PublicKey) *sshd.Server {
	t.Helper()
	dir := filepath.Join(h.Dir, "sshd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return sshd.Start(t, sshd.Options{Dir: dir, ListenAddr: h.Addr.String(), Port: 22, AuthorizedKeys: []ssh.PublicKey{userKey}, Env: labEnv(h),
		Command: func(name string, args ...string) *exec.Cmd { return h.Command(ctx, name, args...) }})
}
