package nat

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestInterfaceCandidates(t *testing.T) {
	a := netip.MustParseAddr
	ifaces := []Interface{
		{Name: "lo", Up: true, Loopback: true, Addrs: []netip.Addr{a("127.0.0.1"), a("::1")}},
		{Name: "eth0", Up: true, Addrs: []netip.Addr{a("192.168.1.10"), a("fe80::1"), a("2001:db8::10")}},
		{Name: "eth1", Up: false, Addrs: []netip.Addr{a("10.0.0.5")}},
		{Name: "docker0", Up: true, Addrs: []netip.Addr{a("172.17.0.1")}},
		{Name: "br-1234abcd", Up: true, Addrs: []netip.Addr{a("172.18.0.1")}},
		{Name: "uncloud", Up: true, Addrs: []netip.Addr{a("10.210.3.1")}},
		{Name: "wg0", Up: true, Addrs: []netip.Addr{a("10.210.9.1"), a("100.64.0.7")}},
		{Name: "wlan0", Up: true, Addrs: []netip.Addr{a("192.168.50.3")}},
	}
	got := InterfaceCandidates(ifaces, DefaultFilter(), 51820)
	want := []string{"192.168.1.10:51820", "100.64.0.7:51820", "192.168.50.3:51820", "[2001:db8::10]:51820"}
	if s := strs(got); !slices.Equal(s, want) {
		t.Fatalf("default filter: %v, want %v", s, want)
	}
	f, err := ParseFilter([]string{"wlan", "100.64.0.0/10"})
	if err != nil {
		t.Fatal(err)
	}
	got = InterfaceCandidates(ifaces, f, 51820)
	want = []string{"192.168.1.10:51820", "[2001:db8::10]:51820"}
	if s := strs(got); !slices.Equal(s, want) {
		t.Fatalf("custom filter: %v, want %v", s, want)
	}
}

func TestParseFilterErrors(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "not an interface", "eth0:1", "averyveryverylongname"} {
		_, err := ParseFilter([]string{bad})
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseFilter(%q) = %v, want an error naming it", bad, err)
		}
	}
}

func TestCandidatesOrderAndDedup(t *testing.T) {
	ap := netip.MustParseAddrPort
	got := Candidates(
		[]netip.AddrPort{ap("203.0.113.5:51820")},
		[]netip.AddrPort{ap("192.168.1.10:51820"), ap("203.0.113.5:51820")},
		[]netip.AddrPort{ap("198.51.100.7:40000"), ap("10.210.1.1:51820"), ap("192.168.1.10:51820")},
		DefaultFilter())
	want := []string{"203.0.113.5:51820", "192.168.1.10:51820", "198.51.100.7:40000"}
	if s := strs(got); !slices.Equal(s, want) {
		t.Fatalf("Candidates = %v, want %v", s, want)
	}
}

func strs(aps []netip.AddrPort) []string {
	out := make([]string, len(aps))
	for i, a := range aps {
		out[i] = a.String()
	}
	return out
}

// TestUsableCandidate: what may be probed at all, whoever names it.
func TestUsableCandidate(t *testing.T) {
	for _, tc := range []struct {
		ap   string
		want bool
	}{
		{"203.0.113.7:51820", true},
		{"192.168.1.20:51820", true},
		{"[2001:db8::1]:51820", true},
		{"203.0.113.7:0", false},
		{"127.0.0.1:51820", false},
		{"[::1]:51820", false},
		{"0.0.0.0:51820", false},
		{"0.1.2.3:51820", false},
		{"[::]:51820", false},
		{"224.0.0.251:5353", false},
		{"[ff02::1]:51820", false},
		{"255.255.255.255:51820", false},
		{"169.254.1.1:51820", false},
		{"[fe80::1]:51820", false},
		{"[fe80::1%eth0]:51820", false},
		{"10.210.3.1:51820", false},
		{"[::ffff:203.0.113.7]:51820", false}, // callers unmap first
	} {
		if got := usableCandidate(netip.MustParseAddrPort(tc.ap)); got != tc.want {
			t.Errorf("usableCandidate(%s) = %v, want %v", tc.ap, got, tc.want)
		}
	}
	got := usableCandidates([]netip.AddrPort{netip.MustParseAddrPort("[::ffff:203.0.113.7]:51820"),
		netip.MustParseAddrPort("203.0.113.7:51820"), netip.MustParseAddrPort("127.0.0.1:1")}, 16)
	if len(got) != 1 || got[0] != netip.MustParseAddrPort("203.0.113.7:51820") {
		t.Errorf("usableCandidates = %v, want the one address, unmapped, once", got)
	}
}
