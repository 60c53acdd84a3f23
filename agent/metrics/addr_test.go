package metrics

import (
	"net/netip"
	"testing"
)

func TestParseAddr(t *testing.T) {
	mesh := netip.MustParseAddr("10.210.3.1")
	tests := []struct {
		addr   string
		mesh   netip.Addr
		public bool
		want   string // "" : refused
		onMesh bool
	}{
		{addr: "127.0.0.1:9101", mesh: mesh, want: "127.0.0.1:9101"},
		{addr: "[::1]:9101", mesh: mesh, want: "[::1]:9101"},
		{addr: "10.210.3.1:9101", mesh: mesh, want: "10.210.3.1:9101", onMesh: true},
		{addr: "mesh:9101", mesh: mesh, want: "10.210.3.1:9101", onMesh: true},
		// Before the machine has a subnet (init, join): accepted, unresolved.
		{addr: "mesh:9101", want: "10.210.0.0:9101", onMesh: true},
		{addr: "192.168.1.5:9101", mesh: mesh},
		{addr: "0.0.0.0:9101", mesh: mesh},
		{addr: ":9101", mesh: mesh},
		{addr: "[::]:9101", mesh: mesh},
		{addr: "[::ffff:192.168.1.5]:9101", mesh: mesh},
		{addr: "192.168.1.5:9101", mesh: mesh, public: true, want: "192.168.1.5:9101"},
		{addr: ":9101", mesh: mesh, public: true, want: "0.0.0.0:9101"},
		{addr: "[::ffff:127.0.0.1]:9101", mesh: mesh, want: "127.0.0.1:9101"},
		{addr: "localhost:9101", mesh: mesh},
		{addr: "127.0.0.1", mesh: mesh},
		{addr: "127.0.0.1:0", mesh: mesh},
		{addr: "127.0.0.1:70000", mesh: mesh},
		{addr: "127.0.0.1:http", mesh: mesh},
	}
	for _, tt := range tests {
		got, err := ParseAddr(tt.addr, tt.mesh, tt.public)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("ParseAddr(%q, public=%v) = %v, want refused", tt.addr, tt.public, got)
		case tt.want != "" && err != nil:
			t.Errorf("ParseAddr(%q, public=%v): %v", tt.addr, tt.public, err)
		case tt.want != "" && got.String() != tt.want:
			t.Errorf("ParseAddr(%q) = %v, want %v", tt.addr, got, tt.want)
		case tt.want != "" && OnMesh(got) != tt.onMesh:
			t.Errorf("OnMesh(%v) = %v", got, !tt.onMesh)
		}
	}
}
