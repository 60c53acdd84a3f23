package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/uncloud-mesh/uncloud/internal/testkit/sshd"
)

func TestSSHTargetURL(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		port uint16
		want string // "" : an error
	}{
		{"pi.local", 0, "ssh://pi.local"},
		{"pi@pi.local", 0, "ssh://pi@pi.local"},
		{"pi@pi.local:2222", 0, "ssh://pi@pi.local:2222"},
		{"pi@pi.local", 2222, "ssh://pi@pi.local:2222"},
		{"pi@pi.local:2222", 2222, "ssh://pi@pi.local:2222"},
		{"pi@pi.local:22", 2222, ""}, // two ports disagree
		{"my-alias", 0, "ssh://my-alias"},
		{"ssh://root@10.0.0.1:22", 0, "ssh://root@10.0.0.1:22"},
		{"ssh://root@10.0.0.1/run/x.sock", 0, ""},
		{"root@2001:db8::1", 0, "ssh://root@[2001:db8::1]"},
		{"root@[2001:db8::1]:2222", 0, "ssh://root@[2001:db8::1]:2222"},
		{"root@2001:db8::1", 22, "ssh://root@[2001:db8::1]:22"},
		{"me@corp@host", 0, "ssh://me%40corp@host"},
		{"@host", 0, ""},
		{"", 0, ""},
		{"host:0", 0, ""},
		{"host:99999", 0, ""},
		{"a b", 0, ""},
	} {
		got, err := sshTargetURL(tc.arg, tc.port)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%q -p %d: got %q, want an error", tc.arg, tc.port, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q -p %d: got %q, %v; want %q", tc.arg, tc.port, got, err, tc.want)
		}
	}
}

func TestGoArch(t *testing.T) {
	for _, tc := range []struct{ uname, want string }{
		{"Linux x86_64", "amd64"},
		{"Linux aarch64", "arm64"},
		{"Linux armv7l", "arm"},
		{"Linux armv8l", "arm"},
		{"Linux armv6l", ""}, // no build for a Pi Zero
		{"Linux riscv64", ""},
		{"Darwin arm64", ""},
		{"FreeBSD amd64", ""},
		{"Linux", ""},
		{"", ""},
	} {
		got, err := goArch(tc.uname)
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("%q: got %q, %v; want %q", tc.uname, got, err, tc.want)
		}
	}
}

func TestPickBinary(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256([]byte(content))
		return hex.EncodeToString(s[:])
	}
	amd := write("uncloud-linux-amd64", "amd64 binary")
	arm := write("uncloud-linux-arm", "arm binary")
	write("uncloud-linux-arm64", "swapped")
	sums := fmt.Sprintf("%s  uncloud-linux-amd64\n%s *uncloud-linux-arm\n%s  uncloud-linux-arm64\n", amd, arm, strings.Repeat("0", 64))
	write("SHA256SUMS", sums)
	write("self", "self")
	self := filepath.Join(dir, "self")

	for _, tc := range []struct {
		goarch, releaseDir, selfArch string
		wantPath, wantErr            string
	}{
		{"amd64", dir, "amd64", "uncloud-linux-amd64", ""},
		{"arm", dir, "amd64", "uncloud-linux-arm", ""}, // the '*' binary marker
		{"arm64", dir, "amd64", "", "SHA256SUMS says"},
		{"amd64", "", "amd64", "self", ""},
		{"arm64", "", "amd64", "", "uncloud-linux-arm64"}, // names the missing file
		{"arm", t.TempDir(), "arm", "", "uncloud-linux-arm is missing"},
	} {
		b, err := pickBinary(tc.goarch, tc.releaseDir, self, tc.selfArch)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s from %q: %v, want an error with %q", tc.goarch, tc.releaseDir, err, tc.wantErr)
			}
			continue
		}
		if err != nil || filepath.Base(b.Path) != tc.wantPath || len(b.SHA256) != 64 || b.Size == 0 {
			t.Errorf("%s from %q: %+v, %v; want %s", tc.goarch, tc.releaseDir, b, err, tc.wantPath)
		}
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin("/usr/local/bin/uncloud", "--name", "it's", "a b")
	want := `'/usr/local/bin/uncloud' '--name' 'it'\''s' 'a b'`
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// TestHostKeys: first contact without a terminal is refused, asked
// about on one (no: refused; yes: added), and accepted with
// --accept-new-host-key; a changed key is refused even then.
func TestHostKeys(t *testing.T) {
	dir := t.TempDir()
	key := func(name string) ssh.PublicKey { return sshd.WriteKey(t, filepath.Join(dir, name)) }
	k1, k2 := key("k1"), key("k2")
	known := filepath.Join(dir, "ssh", "known_hosts") // its directory is made on first write
	addr := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 2222}
	host := "10.0.0.1:2222"

	h := &hostKeys{file: known}
	if err := h.check(host, addr, k1); err == nil || !strings.Contains(err.Error(), "--accept-new-host-key") ||
		!strings.Contains(err.Error(), ssh.FingerprintSHA256(k1)) {
		t.Fatalf("unknown host without a terminal: %v", err)
	}
	var asked string
	h.ask = func(q string) bool { asked = q; return false }
	if err := h.check(host, addr, k1); err == nil || !strings.Contains(asked, ssh.FingerprintSHA256(k1)) {
		t.Fatalf("declined: %v (asked %q)", err, asked)
	}
	h.ask = func(string) bool { return true }
	if err := h.check(host, addr, k1); err != nil || h.added != ssh.FingerprintSHA256(k1) {
		t.Fatalf("accepted: %v, added %q", err, h.added)
	}
	b, _ := os.ReadFile(known)
	if !strings.HasPrefix(string(b), "[10.0.0.1]:2222 ssh-ed25519 ") {
		t.Fatalf("known_hosts: %q", b)
	}
	h2 := &hostKeys{file: known}
	if err := h2.check(host, addr, k1); err != nil || h2.added != "" {
		t.Fatalf("a known key: %v", err)
	}
	if got := h2.algorithms(host); len(got) != 1 || got[0] != ssh.KeyAlgoED25519 {
		t.Fatalf("algorithms for a host known by its Ed25519 key: %v", got)
	}
	if got := h2.algorithms("10.0.0.2:22"); got != nil {
		t.Fatalf("algorithms for an unknown host: %v", got)
	}
	h3 := &hostKeys{file: known, acceptNew: true}
	if err := h3.check(host, addr, k2); err == nil || !strings.Contains(err.Error(), "CHANGED") || !strings.Contains(err.Error(), ssh.FingerprintSHA256(k2)) {
		t.Fatalf("a changed key with --accept-new-host-key: %v", err)
	}
	if err := h3.check("10.0.0.2:22", addr, k2); err != nil {
		t.Fatalf("a new host with --accept-new-host-key: %v", err)
	}
	b, _ = os.ReadFile(known)
	if !strings.Contains(string(b), "\n10.0.0.2 ssh-ed25519 ") {
		t.Fatalf("known_hosts after a port-22 host: %q", b)
	}
}
