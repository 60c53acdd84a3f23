package static

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
)

const (
	testPriv = "KBdenzD4PkDaI0x5hL86nK5Y2nC7emldqVHRfgJHiUQ="
	testPub  = "qa7WeeqvLXPz5lXA0C/lQKdczAkg5GMy54iAb/efPE8="
)

func TestParseStaticConfig(t *testing.T) {
	text := `
# machine one
[Interface]
PrivateKey = ` + testPriv + `
address = 10.210.1.1/24   # wg-quick form: the /24 is ignored, the interface holds the /32
ListenPort = 51999
Expose = 8080, 53/udp
Expose = 9090
SOCKS5 = 127.0.0.1:1080

[Peer]
PublicKey = ` + testPub + `
Endpoint = 198.18.0.2:51820
AllowedIPs = 10.210.2.0/24
AllowedIPs = 10.210.9.7/32
PersistentKeepalive = off
`
	cfg, err := ParseConfig("one.conf", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Device.Address != netip.MustParseAddr("10.210.1.1") || cfg.Device.ListenPort != 51999 {
		t.Fatalf("device = %+v", cfg.Device)
	}
	if len(cfg.Device.Expose) != 3 || cfg.Device.Expose[1] != (tun.ExposedPort{Port: 53, Proto: "udp"}) {
		t.Fatalf("expose = %v", cfg.Device.Expose)
	}
	if cfg.SOCKS5 != "127.0.0.1:1080" {
		t.Fatalf("socks5 = %q", cfg.SOCKS5)
	}
	if len(cfg.Peers) != 1 {
		t.Fatalf("peers = %+v", cfg.Peers)
	}
	p := cfg.Peers[0]
	if p.PublicKey.String() != testPub || p.Endpoint != netip.MustParseAddrPort("198.18.0.2:51820") ||
		len(p.AllowedIPs) != 2 || p.PersistentKeepalive != 0 {
		t.Fatalf("peer = %+v", p)
	}
}

func TestParseStaticConfigDefaultsKeepalive(t *testing.T) {
	text := "[Interface]\nPrivateKey = " + testPriv + "\nAddress = 10.210.1.1\n[Peer]\nPublicKey = " + testPub + "\n"
	cfg, err := ParseConfig("x", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Peers[0].PersistentKeepalive != 25*time.Second {
		t.Fatalf("keepalive = %v, want 25s", cfg.Peers[0].PersistentKeepalive)
	}
}

// Every bad config must say which line and field is wrong.
func TestParseStaticConfigErrorsNameTheField(t *testing.T) {
	iface := "[Interface]\nPrivateKey = " + testPriv + "\nAddress = 10.210.1.1\n"
	peer := "[Peer]\nPublicKey = " + testPub + "\n"
	tests := []struct {
		name, text, want string
	}{
		{"bad private key", "[Interface]\nPrivateKey = nope\nAddress = 10.210.1.1\n", "bad.conf:2: [Interface] PrivateKey: key"},
		{"short private key", "[Interface]\nPrivateKey = AAAA\n", "[Interface] PrivateKey: key \"AAAA\" decodes to 3 bytes"},
		{"missing private key", "[Interface]\nAddress = 10.210.1.1\n", "[Interface] PrivateKey: missing"},
		{"missing address", "[Interface]\nPrivateKey = " + testPriv + "\n", "[Interface] Address: missing"},
		{"address outside mesh", "[Interface]\nAddress = 192.168.1.1\n", "bad.conf:2: [Interface] Address: 192.168.1.1 is outside the mesh"},
		{"address garbage", "[Interface]\nAddress = ten\n", "[Interface] Address: \"ten\" is not an IPv4"},
		{"port", iface + "ListenPort = 70000\n", "bad.conf:4: [Interface] ListenPort:"},
		{"port zero", iface + "ListenPort = 0\n", "[Interface] ListenPort: port 0"},
		{"mtu", iface + "MTU = 9\n", "[Interface] MTU: 9 is out of range"},
		{"userspace", iface + "Userspace = maybe\n", "[Interface] Userspace:"},
		{"expose", iface + "Expose = 80/sctp\n", "[Interface] Expose:"},
		{"socks not loopback", iface + "SOCKS5 = 0.0.0.0:1080\n", "[Interface] SOCKS5: 0.0.0.0 is not a loopback"},
		{"unknown interface field", iface + "DNS = 1.1.1.1\n", "bad.conf:4: [Interface] DNS: unknown field"},
		{"duplicate field", iface + "Address = 10.210.1.2\n", "bad.conf:4: [Interface] Address: given twice"},
		{"no interface", peer, "[Interface]: section missing"},
		{"two interfaces", iface + iface, "bad.conf:4: [Interface] [Interface]: section given twice"},
		{"unknown section", "[Peers]\n", "bad.conf:1: [Peers]: unknown section"},
		{"field outside section", "PrivateKey = x\n", "bad.conf:1: PrivateKey: field outside"},
		{"no equals", iface + "PrivateKey\n", "bad.conf:4: [Interface] PrivateKey: expected Field = value"},
		{"peer without key", iface + "[Peer]\nEndpoint = 1.2.3.4:5\n", "bad.conf:4: [Peer] PublicKey: missing"},
		{"peer bad key", iface + "[Peer]\nPublicKey = zz\n", "bad.conf:5: [Peer] PublicKey: key"},
		{"peer endpoint hostname", iface + peer + "Endpoint = example.com:51820\n", "bad.conf:6: [Peer] Endpoint: \"example.com:51820\" is not IP:port"},
		{"peer allowed ips", iface + peer + "AllowedIPs = 10.210.2.0/33\n", "[Peer] AllowedIPs: \"10.210.2.0/33\" is not a prefix"},
		{"peer keepalive", iface + peer + "PersistentKeepalive = soon\n", "[Peer] PersistentKeepalive:"},
		{"peer unknown field", iface + peer + "PresharedKey = x\n", "[Peer] PresharedKey: unknown field"},
		{"duplicate peer", iface + peer + peer, "bad.conf:6: [Peer] PublicKey: peer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("bad.conf", strings.NewReader(tt.text))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.text)
			}
			var cerr *ConfigError
			if !errors.As(err, &cerr) {
				t.Fatalf("error %v is not a *ConfigError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestLoadConfigRefusesLooseMode: a config holding a private key that
// group or others can read or write is refused, naming the path and the fix.
func TestLoadConfigRefusesLooseMode(t *testing.T) {
	text := "[Interface]\nPrivateKey = " + testPriv + "\nAddress = 10.210.1.1\n"
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o640, false},
		{0o604, false},
		{0o620, false},
		{0o644, false},
	} {
		path := filepath.Join(t.TempDir(), "static.conf")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(path)
		if tc.ok && err != nil {
			t.Errorf("mode %04o: %v", tc.mode, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "chmod 600 "+path)) {
			t.Errorf("mode %04o: error %v, want a refusal naming 'chmod 600 %s'", tc.mode, err, path)
		}
	}
}
