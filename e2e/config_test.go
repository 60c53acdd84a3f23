package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/tun"
)

// TestBadConfigNamesTheField runs `uncloud agent` on broken config files
// and flags: each must exit non-zero, promptly, with an error on stderr
// that names the field (and, for a field on a line, the file and line).
// As root the agent runs inside a lab host, so a config wrongly accepted
// cannot touch the machine's own network; otherwise it runs in userspace
// mode, which needs no privileges.
func TestBadConfigNamesTheField(t *testing.T) {
	bin, err := lab.UncloudBinary()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := tun.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	peer, err := tun.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	peer2, err := tun.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	key, pub, pub2 := priv.String(), peer.PublicKey().String(), peer2.PublicKey().String()
	zeroKey := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	shortKey := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

	// good is a valid config; each case breaks one thing in it. Lines:
	// 1 [Interface], 2 PrivateKey, 3 Address, 4 ListenPort, 5 iface,
	// 6 [Peer], 7 PublicKey, 8 Endpoint, 9 AllowedIPs, 10 peerLines.
	good := func(iface, peerLines string) string {
		return fmt.Sprintf("[Interface]\nPrivateKey = %s\nAddress = 10.210.1.1\nListenPort = 51820\n%s\n[Peer]\nPublicKey = %s\nEndpoint = 198.18.1.2:51820\nAllowedIPs = 10.210.2.0/24\n%s", key, iface, pub, peerLines)
	}
	cases := []struct {
		name   string
		config string   // file content; empty means use args only
		args   []string // extra agent flags
		field  string   // must appear in stderr (case-insensitive)
		line   int      // if > 0, "FILE:LINE" must appear in stderr
	}{
		{name: "private key not base64",
			config: strings.Replace(good("", ""), key, "not-a-key!", 1), field: "PrivateKey", line: 2},
		{name: "private key too short",
			config: strings.Replace(good("", ""), key, shortKey, 1), field: "PrivateKey", line: 2},
		{name: "private key all zeros",
			config: strings.Replace(good("", ""), key, zeroKey, 1), field: "PrivateKey", line: 2},
		{name: "private key missing",
			config: strings.Replace(good("", ""), "PrivateKey = "+key+"\n", "", 1), field: "PrivateKey"},
		{name: "address not an IP",
			config: strings.Replace(good("", ""), "10.210.1.1", "10.210.1", 1), field: "Address", line: 3},
		{name: "address outside the mesh",
			config: strings.Replace(good("", ""), "10.210.1.1", "192.168.1.1", 1), field: "Address", line: 3},
		{name: "listen port out of range",
			config: strings.Replace(good("", ""), "ListenPort = 51820", "ListenPort = 70000", 1), field: "ListenPort", line: 4},
		{name: "listen port not a number",
			config: strings.Replace(good("", ""), "ListenPort = 51820", "ListenPort = fifty", 1), field: "ListenPort", line: 4},
		{name: "mtu too small",
			config: good("MTU = 100", ""), field: "MTU", line: 5},
		{name: "unknown interface field",
			config: good("Colour = blue", ""), field: "Colour", line: 5},
		{name: "peer public key not base64",
			config: strings.Replace(good("", ""), pub, "%%%", 1), field: "PublicKey", line: 7},
		{name: "peer public key missing",
			config: strings.Replace(good("", ""), "PublicKey = "+pub+"\n", "", 1), field: "PublicKey"},
		{name: "peer endpoint not ip:port",
			config: strings.Replace(good("", ""), "198.18.1.2:51820", "198.18.1.2", 1), field: "Endpoint", line: 8},
		{name: "peer allowed ips not a prefix",
			config: strings.Replace(good("", ""), "10.210.2.0/24", "10.210.2.0/33", 1), field: "AllowedIPs", line: 9},
		{name: "peer keepalive not a number",
			config: good("", "PersistentKeepalive = soon\n"), field: "PersistentKeepalive", line: 10},
		// Errors found when applying the peers, after parsing: they name
		// the peers by key and the field in words ("allowed IP"), without a line.
		{name: "peers with overlapping allowed ips",
			config: good("", "") + "\n[Peer]\nPublicKey = " + pub2 + "\nAllowedIPs = 10.210.2.0/24\n", field: "AllowedIP"},
		{name: "peer allowed ips cover this machine",
			config: strings.Replace(good("", ""), "10.210.2.0/24", "10.210.0.0/16", 1), field: "AllowedIP"},
		{name: "no interface section",
			config: "[Peer]\nPublicKey = " + pub + "\nAllowedIPs = 10.210.2.0/24\n", field: "Interface"},
		{name: "config file missing", config: "", field: "config"},
		{name: "expose flag not a port",
			config: good("", ""), args: []string{"--userspace", "--expose", "http"}, field: "expose"},
		{name: "socks5 flag not loopback",
			config: good("", ""), args: []string{"--userspace", "--socks5", "0.0.0.0:1080"}, field: "socks5"},
	}

	var host *lab.Host
	if os.Geteuid() == 0 {
		l := lab.Start(t)
		host = l.MustHost(t, "cfg", lab.HostOptions{})
	}
	dir := t.TempDir()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("bad%d.conf", i))
			if tc.config != "" {
				if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			args := append([]string{"agent", "--config", path}, tc.args...)
			stderr, code := runAgentBriefly(t, host, bin, args)
			if code == 0 {
				t.Fatalf("uncloud %s: exit status 0, want non-zero; stderr:\n%s", strings.Join(args, " "), stderr)
			}
			// Case and spaces do not matter: "AllowedIPs" and "allowed IP"
			// both name the field.
			squash := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, " ", "")) }
			if !strings.Contains(squash(stderr), squash(tc.field)) {
				t.Errorf("stderr does not name the field %q:\n%s", tc.field, stderr)
			}
			// Config problems name the file (flag problems name the flag).
			if tc.args == nil && !strings.Contains(stderr, path) {
				t.Errorf("stderr does not name the file %s:\n%s", path, stderr)
			}
			if tc.line > 0 {
				want := regexp.MustCompile(regexp.QuoteMeta(path) + `:` + itoa(tc.line) + `\b`)
				if !want.MatchString(stderr) {
					t.Errorf("stderr does not name %s:%d:\n%s", path, tc.line, stderr)
				}
			}
			if strings.Contains(stderr, key) {
				t.Errorf("stderr echoes the private key:\n%s", stderr)
			}
			t.Logf("exit %d: %s", code, strings.TrimSpace(lastLine(stderr)))
		})
	}
	if host != nil {
		// Control: the config the cases break is itself good, so each case
		// failed because of its one change.
		path := filepath.Join(dir, "good.conf")
		if err := os.WriteFile(path, []byte(good("", "")), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := host.Start("good", bin, "agent", "--config", path, "--userspace")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), lab.UpTimeout)
		defer cancel()
		if _, err := p.WaitLog(ctx, 0, "mesh up"); err != nil {
			t.Fatalf("control: the unbroken config does not start: %v", err)
		}
		if err := p.Stop(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		// Nothing was brought up by any of the refused configs.
		if out, err := host.Run(t.Context(), "ip", "-o", "link", "show"); err != nil || strings.Contains(out, "uncloud") {
			t.Errorf("links after refused configs: %q %v, want no uncloud interface", out, err)
		}
	}
}

// runAgentBriefly runs the agent (inside host if given) and returns its
// stderr and exit status; an agent still running after 15 s accepted a bad
// config: it is killed and reported with status 0.
func runAgentBriefly(t *testing.T, host *lab.Host, bin string, args []string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	if host != nil {
		cmd = host.Command(ctx, bin, args...)
	} else {
		cmd = exec.CommandContext(ctx, bin, append(args, "--userspace")...)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Errorf("agent still running after 15 s with a bad config; stderr:\n%s", stderr.String())
		return stderr.String(), 0
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s: %v", bin, err)
	}
	return stderr.String(), cmd.ProcessState.ExitCode()
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
