package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/internal/testkit/sshd"
)

// TestMachineAdd: a laptop (a lab host without an agent, its user's
// ~/.ssh in a temp HOME) reaches m1 (kernel mode) with --connect
// ssh:// and runs `machine add` on a fresh host through a ~/.ssh/config
// alias, as a non-root user with passwordless sudo, over a real sshd in
// the host's namespace. The host becomes m2, which m1 lists and pings.
// Then the host's key changes (refused), `machine init` makes a new
// network on another fresh host (root, -i), and adding that host, or m1
// itself, is refused with the host unchanged.
func TestMachineAdd(t *testing.T) {
	sshd.Binary(t)
	if _, err := exec.LookPath("sudo"); err != nil {
		t.Skip("sudo not installed (scripts/test installs it)")
	}
	ctx := context.Background()
	f := form(ctx, t, 1, nil)
	var hosts [4]*lab.Host
	for i, name := range []string{"lap", "nh", "ni", "nm"} {
		h, err := f.lab.AddHost(ctx, name, lab.HostOptions{})
		if err != nil {
			t.Fatal(err)
		}
		hosts[i] = h
	}
	lap, nh, ni, nm := hosts[0], hosts[1], hosts[2], hosts[3]
	m1 := f.hosts[0]

	// A non-root user with passwordless sudo that keeps the lab host's
	// DOCKER_HOST (else the agent would use this machine's dockerd).
	user := fmt.Sprintf("ucma%d", os.Getpid()%100000)
	// sshd reads authorized_keys as the user: the lab's directories must
	// let it through.
	for _, d := range []string{f.lab.Dir, nh.Dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("useradd", "-m", "-d", filepath.Join(nh.Dir, "home-"+user), "-s", "/bin/sh", "-p", "*", user).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	sudoers := "/etc/sudoers.d/uncloud-test-" + user
	t.Cleanup(func() {
		os.Remove(sudoers)
		exec.Command("userdel", "-r", user).Run()
	})
	setSudoers := func(rule string) {
		t.Helper()
		if err := os.WriteFile(sudoers, fmt.Appendf(nil, "%s ALL=(root) %s\nDefaults:%s env_keep += \"DOCKER_HOST\"\n", user, rule, user), 0o440); err != nil {
			t.Fatal(err)
		}
	}
	setSudoers("ALL") // a password first

	home := filepath.Join(lap.Dir, "home")
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	keyPath := filepath.Join(home, ".ssh", "lab_key")
	userKey := sshd.WriteKey(t, keyPath)
	srvM1 := startLabSSHD(ctx, t, m1, userKey)
	srvNH := startLabSSHD(ctx, t, nh, userKey)
	startLabSSHD(ctx, t, ni, userKey)
	startLabSSHD(ctx, t, nm, userKey)
	// m1 is known (the user reached it before); nh and ni are not.
	os.WriteFile(filepath.Join(home, ".ssh", "known_hosts"), []byte(srvM1.KnownHostsLine()), 0o600)
	os.WriteFile(filepath.Join(home, ".ssh", "config"), fmt.Appendf(nil,
		"Host newbox\n  HostName %s\n  User %s\n  IdentityFile ~/.ssh/lab_key\n\nHost %s\n  IdentityFile ~/.ssh/lab_key\n",
		nh.Addr, user, m1.Addr), 0o600)

	connect := "ssh://root@" + m1.Addr.String()
	cli := func(args ...string) (stdout, stderr string, err error) {
		env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "SSH_AUTH_SOCK=", "UNCLOUD_CONNECT="}
		cmd := lap.Command(ctx, "env", append(append(env, f.lab.Uncloud), args...)...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}
	nhBin := filepath.Join(nh.Dir, "bin", "uncloud")
	add := []string{"--connect", connect, "machine", "add", "newbox", "--remote-bin", nhBin, "--name", "m2"}

	// Without a terminal an unknown host key is refused, and nothing is
	// uploaded.
	out, stderr, err := cli(add...)
	if err == nil || !strings.Contains(out+stderr, "not in "+filepath.Join(home, ".ssh", "known_hosts")) || !strings.Contains(out+stderr, "--accept-new-host-key") {
		t.Fatalf("unknown host key without a terminal: err %v\n%s%s", err, out, stderr)
	}
	if _, err := os.Stat(nhBin); err == nil {
		t.Fatal("the binary was uploaded to a host whose key was refused")
	}

	// sudo that wants a password is refused, saying so, before any change.
	out, stderr, err = cli(append(add, "--accept-new-host-key")...)
	if err == nil || !strings.Contains(out, user+" needs a password for sudo") || !strings.Contains(stderr, "nothing was changed") {
		t.Fatalf("sudo with a password: err %v\n%s%s", err, out, stderr)
	}
	if _, err := os.Stat(nhBin); err == nil {
		t.Fatal("the binary was uploaded though sudo wanted a password")
	}
	t.Logf("sudo with a password:\n%s%s", out, stderr)
	setSudoers("NOPASSWD: ALL")

	start := time.Now()
	out, stderr, err = cli(add...)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("machine add: %v\n%s%s\nnh sshd:\n%s", err, out, stderr, srvNH.Logs())
	}
	t.Logf("machine add over SSH (laptop → nh as %s with sudo, through m1), %v:\n%s", user, took.Round(10*time.Millisecond), out)
	for _, want := range []string{"✓ sudo: " + user, "✓ membership:", "✓ token:", "✓ upload:", "✓ join:", "- systemd: not running", "Machine m2 joined network"} {
		if !strings.Contains(out, want) {
			t.Errorf("machine add output lacks %q", want)
		}
	}
	var m2Addr string
	testkit.Eventually(t, "m1 lists m2 as alive with a handshake", 30*time.Second, func() error {
		for _, m := range f.machines(ctx, t, 0) {
			if m.Name == "m2" && m.State == "alive" && !m.LastHandshake.IsZero() {
				m2Addr = m.Address
				return nil
			}
		}
		return fmt.Errorf("no live m2")
	})
	if !strings.Contains(out, m2Addr+" on the mesh") {
		t.Errorf("the final line does not give m2's mesh address %s", m2Addr)
	}
	if err := pingOnce(ctx, m1, m2Addr); err != nil {
		t.Fatalf("m1 cannot ping m2 at %s: %v", m2Addr, err)
	}
	tokens := tokenStates(ctx, t, f)
	if len(tokens) != 1 || tokens[0] != "used" {
		t.Fatalf("m1's tokens after one add: %v, want one used", tokens)
	}

	// The host's key changes between runs: refused before anything else.
	srvNH.Stop()
	srvNH = sshd.Start(t, sshd.Options{Dir: srvNH.Dir, NewHostKey: true, ListenAddr: nh.Addr.String(), Port: 22,
		AuthorizedKeys: []ssh.PublicKey{userKey}, Env: labEnv(nh),
		Command: func(name string, args ...string) *exec.Cmd { return nh.Command(ctx, name, args...) }})
	out, stderr, err = cli(append(add, "--accept-new-host-key")...)
	if err == nil || !strings.Contains(out, "has CHANGED") || strings.Contains(out, "membership") {
		t.Fatalf("changed host key: err %v\n%s%s", err, out, stderr)
	}
	t.Logf("changed host key:\n%s%s", out, stderr)

	// machine init on another fresh host, as root with -i.
	niBin := filepath.Join(ni.Dir, "bin", "uncloud")
	out, stderr, err = cli("machine", "init", "root@"+ni.Addr.String(), "-i", keyPath, "--accept-new-host-key", "--remote-bin", niBin, "--name", "solo")
	if err != nil || !strings.Contains(out, "✓ sudo: not needed") || !strings.Contains(out, "Machine solo created network") {
		t.Fatalf("machine init: %v\n%s%s", err, out, stderr)
	}
	t.Logf("machine init:\n%s", out)
	st1 := hostStatus(ctx, t, m1, f.lab.Uncloud)
	stSolo := hostStatus(ctx, t, ni, niBin)
	if stSolo.Name != "solo" || stSolo.NetworkID == st1.NetworkID {
		t.Fatalf("ni after machine init: %+v (m1's network %s)", stSolo, st1.NetworkID)
	}

	// Adding a member of another network, or of this one, is refused and
	// changes nothing there.
	before := hostSnapshot(t, ni, niBin)
	out, stderr, err = cli("--connect", connect, "machine", "add", "root@"+ni.Addr.String(), "-i", keyPath, "--remote-bin", niBin)
	if err == nil || !strings.Contains(out, `already machine "solo" of another network, `+stSolo.NetworkID) || !strings.Contains(stderr, "nothing was changed") {
		t.Fatalf("adding a member of another network: err %v\n%s%s", err, out, stderr)
	}
	t.Logf("a member of another network: %s", strings.TrimSpace(stderr))
	if after := hostSnapshot(t, ni, niBin); after != before {
		t.Fatalf("the refused host changed:\nbefore %s\nafter  %s", before, after)
	}
	out, stderr, err = cli("--connect", connect, "machine", "add", "root@"+m1.Addr.String(), "--remote-bin", f.lab.Uncloud)
	if err == nil || !strings.Contains(out, `already machine "m1" of this network`) {
		t.Fatalf("adding m1 to its own network: err %v\n%s%s", err, out, stderr)
	}
	if got := tokenStates(ctx, t, f); len(got) != 1 {
		t.Fatalf("refused adds made tokens: %v", got)
	}

	// The peer figure, in the same lab: README's manual path with
	// OpenSSH's scp and ssh (copy, install, token piped to join -; no
	// checksum, sudo or membership check, no systemd step).
	nmBin := filepath.Join(nm.Dir, "bin", "uncloud")
	sshArgs := []string{"-F", "/dev/null", "-i", keyPath, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
		"-o", "UserKnownHostsFile=" + filepath.Join(home, ".ssh", "known_hosts")}
	dest := "root@" + nm.Addr.String()
	script := fmt.Sprintf(`set -e
scp -q %[1]s %[2]q %[3]s:/tmp/uncloud-manual
ssh %[1]s %[3]s 'install -D -m 0755 /tmp/uncloud-manual %[4]s && rm /tmp/uncloud-manual'
%[2]q --connect %[5]s token 2>/dev/null | ssh %[1]s %[3]s '%[4]s join - --name m3'`,
		strings.Join(sshArgs, " "), f.lab.Uncloud, dest, nmBin, connect)
	start = time.Now()
	out, err = lap.Run(ctx, "env", "HOME="+home, "SSH_AUTH_SOCK=", "sh", "-c", script)
	manual := time.Since(start)
	if err != nil || !strings.Contains(out, "This machine is part of the network") {
		t.Fatalf("the manual path: %v\n%s", err, out)
	}
	t.Logf("wall time: machine add %v; README's manual path with scp and ssh %v", took.Round(10*time.Millisecond), manual.Round(10*time.Millisecond))
}

// labEnv is what a lab host's sshd gives its sessions: the host's
// DOCKER_HOST (no engine), as lab.Host.Command sets for its commands.
func labEnv(h *lab.Host) []string {
	return []string{"DOCKER_HOST=unix://" + filepath.Join(h.Dir, "no-docker.sock")}
}

func hostStatus(ctx context.Context, t *testing.T, h *lab.Host, bin string) api.Status {
	t.Helper()
	out, err := h.Run(ctx, bin, "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status on %s: %v\n%s", h.Name, err, out)
	}
	return st
}

func tokenStates(ctx context.Context, t *testing.T, f *formed) []string {
	t.Helper()
	out, err := f.uncloud(ctx, t, 0, "token", "ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ts []api.TokenInfo
	if err := json.Unmarshal([]byte(out), &ts); err != nil {
		t.Fatalf("token ls: %v\n%s", err, out)
	}
	var states []string
	for _, tk := range ts {
		states = append(states, tk.State)
	}
	return states
}

// hostSnapshot is what a refused machine add must not change on h: the
// binary, and the data dir's file names with the contents of its
// machine and host-networking files (the running agent itself keeps
// writing its log and state).
func hostSnapshot(t *testing.T, h *lab.Host, bin string) string {
	t.Helper()
	dataDir := filepath.Join(h.Dir, "lib") // /var/lib/uncloud inside the host
	var names []string
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	sum := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			return "absent"
		}
		s := sha256.Sum256(b)
		return hex.EncodeToString(s[:8])
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("files %v machine.json %s hostnet.json %s binary %s %v", names,
		sum(filepath.Join(dataDir, "machine.json")), sum(filepath.Join(dataDir, "hostnet.json")), sum(bin), fi.ModTime())
}
