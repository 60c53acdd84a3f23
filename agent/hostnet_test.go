package agent

import (
	"reflect"
	"testing"

	"github.com/uncloud-mesh/uncloud/tun"
)

func TestEncodeExposed(t *testing.T) {
	tcp := func(p uint16) tun.ExposedPort { return tun.ExposedPort{Port: p, Proto: "tcp"} }
	many := make([]tun.ExposedPort, 64)
	for i := range many {
		many[i] = tcp(uint16(60000 + i))
	}
	tests := []struct {
		name   string
		ports  []tun.ExposedPort
		budget int
		want   string
		back   []string
	}{
		{"none", nil, 100, "", nil},
		{"tcp and udp", []tun.ExposedPort{tcp(22), {Port: 53, Proto: "udp"}, tcp(8080)}, 100, "22,53/udp,8080",
			[]string{"22/tcp", "53/udp", "8080/tcp"}},
		{"exactly the budget", []tun.ExposedPort{tcp(22), tcp(8080)}, 7, "22,8080", []string{"22/tcp", "8080/tcp"}},
		{"cut with a count", []tun.ExposedPort{tcp(22), tcp(80), tcp(8080), tcp(9090)}, 10, "22,80,+2", []string{"22/tcp", "80/tcp", "+2 more"}},
		{"nothing fits but the count", []tun.ExposedPort{tcp(22222), tcp(33333)}, 3, "+2", []string{"+2 more"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := encodeExposed(tt.ports, tt.budget)
			if got != tt.want || len(got) > tt.budget {
				t.Fatalf("encodeExposed = %q, want %q (budget %d)", got, tt.want, tt.budget)
			}
			if back := decodeExposed(got); !reflect.DeepEqual(back, tt.back) {
				t.Fatalf("decodeExposed(%q) = %q, want %q", got, back, tt.back)
			}
		})
	}
	// The most a machine may expose fits gossip's metadata with room to spare.
	if got := encodeExposed(many, metaExposedBudget); len(got) > metaExposedBudget {
		t.Fatalf("64 ports: %d bytes", len(got))
	}
}
