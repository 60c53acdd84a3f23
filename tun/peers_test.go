package tun

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParsePeerDump(t *testing.T) {
	k1 := mustHexKey(t, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
	dump := strings.Join([]string{
		"private_key=77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
		"listen_port=51820",
		"public_key=" + k1.hexString(),
		"preshared_key=0000000000000000000000000000000000000000000000000000000000000000",
		"protocol_version=1",
		"endpoint=198.18.0.2:51820",
		"last_handshake_time_sec=1700000000",
		"last_handshake_time_nsec=5",
		"tx_bytes=100",
		"rx_bytes=200",
		"persistent_keepalive_interval=25",
		"allowed_ip=10.210.2.0/24",
		"public_key=" + strings.Repeat("ab", 32),
		"last_handshake_time_sec=0",
		"last_handshake_time_nsec=0",
		"",
	}, "\n")
	peers, err := parsePeerDump(dump)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 2 {
		t.Fatalf("got %d peers, want 2", len(peers))
	}
	p := peers[0]
	if p.PublicKey != k1 || p.Endpoint != netip.MustParseAddrPort("198.18.0.2:51820") ||
		p.RxBytes != 200 || p.TxBytes != 100 || p.PersistentKeepalive != 25*time.Second ||
		!p.LastHandshake.Equal(time.Unix(1700000000, 5)) || len(p.AllowedIPs) != 1 {
		t.Fatalf("peer 0 = %+v", p)
	}
	if !peers[1].LastHandshake.IsZero() {
		t.Fatalf("peer without handshake has LastHandshake %v", peers[1].LastHandshake)
	}
}

func TestParsePeerDumpRejectsBadValues(t *testing.T) {
	for _, line := range []string{"public_key=zz", "endpoint=nowhere", "rx_bytes=-1", "allowed_ip=10.0.0.0/99"} {
		dump := "public_key=" + strings.Repeat("ab", 32) + "\n" + line + "\n"
		if strings.HasPrefix(line, "public_key") {
			dump = line + "\n"
		}
		if _, err := parsePeerDump(dump); err == nil {
			t.Errorf("parsePeerDump accepted %q", line)
		}
	}
}

func TestOverlapChecks(t *testing.T) {
	p := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	k1, _ := GeneratePrivateKey()
	k2, _ := GeneratePrivateKey()
	tests := []struct {
		a, b    []netip.Prefix
		overlap bool
	}{
		{p("10.210.2.0/24"), p("10.210.3.0/24"), false},
		{p("10.210.2.0/24"), p("10.210.2.7/32"), true},
		{p("10.210.0.0/16"), p("10.210.9.0/24"), true},
		{p("10.210.2.0/24", "10.211.0.0/24"), p("10.211.0.128/25"), true},
	}
	for _, tt := range tests {
		err := checkSetOverlap([]Peer{{PublicKey: k1, AllowedIPs: tt.a}, {PublicKey: k2, AllowedIPs: tt.b}})
		if (err != nil) != tt.overlap {
			t.Errorf("%v vs %v: err = %v, want overlap=%v", tt.a, tt.b, err, tt.overlap)
		}
	}
}

// peerDump is what wireguard-go's IpcGet prints for n peers.
func peerDump(n int) string {
	var b strings.Builder
	b.WriteString("private_key=" + strings.Repeat("77", 32) + "\nlisten_port=51820\n")
	for i := range n {
		fmt.Fprintf(&b, "public_key=%064x\npreshared_key=%064d\nprotocol_version=1\nendpoint=198.18.1.%d:51820\n", i+1, 0, i+2)
		fmt.Fprintf(&b, "last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=%d\ntx_bytes=%d\nrx_bytes=%d\n", i, 1000*i, 2000*i)
		fmt.Fprintf(&b, "persistent_keepalive_interval=25\nallowed_ip=10.210.%d.0/24\n", i+2)
	}
	return b.String()
}

// TestParsePeerDumpAllocations: the dump is read every second, so parsing
// allocates the result and nothing per line (a line scanner allocated a
// string for each, ten per peer: 400 a second with 40 peers).
func TestParsePeerDumpAllocations(t *testing.T) {
	dump := peerDump(40)
	peers, err := parsePeerDump(dump)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 40 || peers[39].Endpoint != netip.MustParseAddrPort("198.18.1.41:51820") ||
		len(peers[39].AllowedIPs) != 1 || peers[39].AllowedIPs[0] != netip.MustParsePrefix("10.210.41.0/24") {
		t.Fatalf("peer 39 = %+v", peers[39])
	}
	// An append to one peer's allowed IPs must not write into the next's.
	_ = append(peers[0].AllowedIPs, netip.MustParsePrefix("10.0.0.0/8"))
	if peers[1].AllowedIPs[0] != netip.MustParsePrefix("10.210.3.0/24") {
		t.Fatalf("peer 1's allowed IPs changed by an append to peer 0's: %v", peers[1].AllowedIPs)
	}
	if allocs := testing.AllocsPerRun(20, func() { parsePeerDump(dump) }); allocs > 2 {
		t.Errorf("parsing 40 peers allocates %v times, want at most 2 (the peers, their allowed IPs)", allocs)
	}
}

func BenchmarkParsePeerDump(b *testing.B) {
	dump := peerDump(40)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parsePeerDump(dump); err != nil {
			b.Fatal(err)
		}
	}
}
