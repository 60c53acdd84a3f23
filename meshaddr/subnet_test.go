package meshaddr

import (
	"net/netip"
	"strings"
	"testing"
)

func TestSubnetAddresses(t *testing.T) {
	s := Subnet(3)
	for _, tc := range []struct{ got, want string }{
		{s.Prefix().String(), "10.210.3.0/24"},
		{s.MachineAddr().String(), "10.210.3.1"},
		{s.ContainerAddr(7).String(), "10.210.3.7"},
		{s.String(), "10.210.3.0/24"},
		{Mesh().String(), "10.210.0.0/16"},
		{Join().String(), "10.210.0.0/24"},
		{JoinAddr(9).String(), "10.210.0.9"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
}

func TestParseSubnet(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Subnet
		wantErr string
	}{
		{in: "10.210.3.0/24", want: 3},
		{in: "10.210.254.0/24", want: 254},
		{in: "10.210.3.7/24", wantErr: "host bits set"},
		{in: "10.210.0.0/24", wantErr: "no machine's subnet"},
		{in: "10.210.255.0/24", wantErr: "no machine's subnet"},
		{in: "10.211.3.0/24", wantErr: "outside the mesh"},
		{in: "10.210.3.0/25", wantErr: "not an IPv4 /24"},
		{in: "fd00::/24", wantErr: "not an IPv4 /24"},
		{in: "3", wantErr: `subnet "3"`},
		{in: "", wantErr: `subnet ""`},
	} {
		got, err := ParseSubnet(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseSubnet(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSubnet(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if back, err := ParseSubnet(got.String()); err != nil || back != got {
			t.Errorf("round trip of %d: %d, %v", got, back, err)
		}
	}
}

func TestSubnetOf(t *testing.T) {
	for n, ok := range map[int]bool{0: false, 1: true, 254: true, 255: false, 256: false, -1: false} {
		if _, err := SubnetOf(n); (err == nil) != ok {
			t.Errorf("SubnetOf(%d): %v, want ok=%v", n, err, ok)
		}
	}
}

func TestCheck(t *testing.T) {
	if err := CheckAddr(netip.MustParseAddr("10.210.9.9")); err != nil {
		t.Error(err)
	}
	if err := CheckAddr(netip.MustParseAddr("10.211.0.1")); err == nil {
		t.Error("10.211.0.1 accepted")
	}
	if err := CheckPrefix(netip.MustParsePrefix("10.210.4.0/24")); err != nil {
		t.Error(err)
	}
	if err := CheckPrefix(netip.MustParsePrefix("10.0.0.0/8")); err == nil {
		t.Error("10.0.0.0/8 accepted")
	}
	if s, err := SubnetOfAddr(netip.MustParseAddr("10.210.5.7")); err != nil || s != 5 {
		t.Errorf("SubnetOfAddr(10.210.5.7) = %d, %v", s, err)
	}
}
