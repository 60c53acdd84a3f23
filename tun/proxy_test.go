package tun

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// zoneForTest stands in for the agent's resolver: a few names and what
// they resolve to, and which names were asked for.
type zoneForTest struct {
	names map[string][]netip.Addr
	mu    sync.Mutex
	seen  map[string]bool
}

var testZone = &zoneForTest{names: map[string][]netip.Addr{
	"web.internal":         {netip.MustParseAddr("10.210.2.1")},
	"b.machine.internal":   {netip.MustParseAddr("10.210.2.1")},
	"outside.internal":     {netip.MustParseAddr("192.0.2.1")},
	"mixed.internal":       {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.210.2.1")},
	"empty.internal":       {},
	"internal":             {netip.MustParseAddr("10.210.2.1")},
	"example.com":          {netip.MustParseAddr("10.210.2.1")}, // must never be asked
	"example.com.internal": {netip.MustParseAddr("10.210.2.1")},
}}

func (z *zoneForTest) resolve(ctx context.Context, name string) ([]netip.Addr, error) {
	z.mu.Lock()
	if z.seen == nil {
		z.seen = map[string]bool{}
	}
	z.seen[name] = true
	z.mu.Unlock()
	addrs, ok := z.names[name]
	if !ok {
		return nil, fmt.Errorf("%s: no such name", name)
	}
	return addrs, nil
}

func (z *zoneForTest) asked(name string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.seen[name]
}

// TestMeshDialerTarget is the refusal rules both proxies share.
func TestMeshDialerTarget(t *testing.T) {
	withNames := &MeshDialer{Domain: "internal", Resolve: testZone.resolve}
	noNames := &MeshDialer{}
	tests := []struct {
		name    string
		d       *MeshDialer
		host    string
		want    string // the target, or "" for an error
		notMesh bool   // the error is a refusal (ErrNotMesh), not a failure
	}{
		{"mesh address", withNames, "10.210.2.1", "10.210.2.1:80", false},
		{"mesh address, no names", noNames, "10.210.9.9", "10.210.9.9:80", false},
		{"mapped mesh address", withNames, "::ffff:10.210.2.1", "10.210.2.1:80", false},
		{"bracketed", withNames, "[10.210.2.1]", "10.210.2.1:80", false},
		{"public address", withNames, "198.51.100.1", "", true},
		{"loopback", withNames, "127.0.0.1", "", true},
		{"host's LAN", withNames, "192.168.1.1", "", true},
		{"next to the mesh", withNames, "10.211.0.1", "", true},
		{"ipv6", withNames, "2001:db8::1", "", true},
		{"ipv6 loopback", withNames, "[::1]", "", true},
		{"service name", withNames, "web.internal", "10.210.2.1:80", false},
		{"machine name, case, final dot", withNames, "B.machine.INTERNAL.", "10.210.2.1:80", false},
		{"first mesh address of several", withNames, "mixed.internal", "10.210.2.1:80", false},
		{"the apex itself", withNames, "internal", "10.210.2.1:80", false},
		{"outside the domain", withNames, "example.com", "", true},
		{"domain as a label", withNames, "internal.example.com", "", true},
		{"suffix without a dot", withNames, "notinternal", "", true},
		{"internal name outside the mesh", withNames, "outside.internal", "", true},
		{"unknown internal name", withNames, "nobody.internal", "", false},
		{"internal name without addresses", withNames, "empty.internal", "", false},
		{"no names at all", noNames, "web.internal", "", true},
		{"too long", withNames, strings.Repeat("a.", 130) + "internal", "", true},
		{"empty", withNames, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.d.Target(t.Context(), tt.host, 80)
			if tt.want != "" {
				if err != nil || got.String() != tt.want {
					t.Fatalf("Target(%q) = %v, %v; want %s", tt.host, got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Target(%q) = %v, want an error", tt.host, got)
			}
			if errors.Is(err, ErrNotMesh) != tt.notMesh {
				t.Fatalf("Target(%q): %v; refusal %v, want %v", tt.host, err, errors.Is(err, ErrNotMesh), tt.notMesh)
			}
		})
	}
	if testZone.asked("example.com") || testZone.asked("internal.example.com") {
		t.Error("a name outside .internal was looked up")
	}
}
