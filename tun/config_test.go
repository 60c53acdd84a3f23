package tun

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseExposedPort(t *testing.T) {
	tests := []struct {
		in      string
		want    ExposedPort
		wantErr string
	}{
		{in: "8080", want: ExposedPort{8080, "tcp"}},
		{in: "53/udp", want: ExposedPort{53, "udp"}},
		{in: "443/TCP", want: ExposedPort{443, "tcp"}},
		{in: "0", wantErr: "not a port number"},
		{in: "70000", wantErr: "not a port number"},
		{in: "80/sctp", wantErr: "neither tcp nor udp"},
		{in: "http", wantErr: "not a port number"},
	}
	for _, tt := range tests {
		got, err := ParseExposedPort(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseExposedPort(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseExposedPort(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	key, _ := GeneratePrivateKey()
	good := Config{PrivateKey: key, Address: netip.MustParseAddr("10.210.3.1")}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"good", func(*Config) {}, ""},
		{"no key", func(c *Config) { c.PrivateKey = Key{} }, "private key is missing"},
		{"outside mesh", func(c *Config) { c.Address = netip.MustParseAddr("192.168.1.1") }, "outside the mesh"},
		{"ipv6", func(c *Config) { c.Address = netip.MustParseAddr("fd00::1") }, "not an IPv4"},
		{"tiny mtu", func(c *Config) { c.MTU = 100 }, "mtu 100"},
		{"long name", func(c *Config) { c.InterfaceName = "a-very-long-interface" }, "longer than 15"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			c = c.withDefaults()
			err := c.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
