package nat

import (
	"net/netip"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	now := time.Now()
	ap := netip.MustParseAddrPort
	local := []netip.Addr{netip.MustParseAddr("198.19.1.2")}
	obs := func(server, mapped string, age time.Duration) Observation {
		return Observation{Server: ap(server), Mapped: ap(mapped), At: now.Add(-age)}
	}
	tests := []struct {
		name string
		obs  []Observation
		want Type
	}{
		{"nothing", nil, TypeUnknown},
		{"one server behind NAT", []Observation{obs("198.18.1.1:51820", "198.18.1.2:51820", 0)}, TypeUnknown},
		{"seen as own address", []Observation{obs("198.18.1.1:51820", "198.19.1.2:51820", 0)}, TypeNone},
		{"same mapping from two servers", []Observation{
			obs("198.18.1.1:51820", "198.18.1.2:51820", 0), obs("198.18.1.3:51820", "198.18.1.2:51820", 0)}, TypeEndpointIndependent},
		{"port differs per server", []Observation{
			obs("198.18.1.1:51820", "198.18.1.4:16692", 0), obs("198.18.1.3:51820", "198.18.1.4:40001", 0)}, TypeSymmetric},
		{"address differs per server", []Observation{
			obs("198.18.1.1:51820", "198.18.1.4:5000", 0), obs("198.18.1.3:51820", "198.18.1.9:5000", 0)}, TypeSymmetric},
		{"two ports of one server tell nothing", []Observation{
			obs("198.18.1.1:51820", "198.18.1.4:1", 0), obs("198.18.1.1:3478", "198.18.1.4:2", 0)}, TypeUnknown},
		{"old answers expire", []Observation{
			obs("198.18.1.1:51820", "198.18.1.4:1", 3*time.Minute), obs("198.18.1.3:51820", "198.18.1.4:2", 0)}, TypeUnknown},
		{"newest answer per server counts (NAT rebooted)", []Observation{
			obs("198.18.1.1:51820", "198.18.1.2:1111", 30*time.Second), obs("198.18.1.1:51820", "198.18.1.2:2222", 0),
			obs("198.18.1.3:51820", "198.18.1.2:2222", 0)}, TypeEndpointIndependent},
		{"a server that has not answered since the reboot is not compared", []Observation{
			obs("198.18.1.5:51820", "198.18.1.2:51820", 60*time.Second),
			obs("198.18.1.1:51820", "198.18.1.2:40001", 0), obs("198.18.1.3:51820", "198.18.1.2:40001", time.Second)}, TypeEndpointIndependent},
	}
	for _, tt := range tests {
		if got := Classify(tt.obs, local, now); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestReflexiveNewestFirst(t *testing.T) {
	now := time.Now()
	a, b := netip.MustParseAddrPort("198.18.1.2:1"), netip.MustParseAddrPort("198.18.1.2:2")
	got := Reflexive([]Observation{
		{Server: netip.MustParseAddrPort("198.18.1.1:1"), Mapped: a, At: now.Add(-time.Minute)},
		{Server: netip.MustParseAddrPort("198.18.1.3:1"), Mapped: b, At: now},
		{Server: netip.MustParseAddrPort("198.18.1.4:1"), Mapped: a, At: now.Add(-10 * time.Minute)},
	}, now)
	if len(got) != 2 || got[0] != b || got[1] != a {
		t.Fatalf("Reflexive = %v, want [%v %v]", got, b, a)
	}
}

// TestClassifyBehindNATs runs managers over the fake network with real
// NAT behaviour: c behind a symmetric NAT (a new port per destination),
// a behind an endpoint-independent one, p and q public. Each must name
// its NAT from the answers of the machines it reaches.
func TestClassifyBehindNATs(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		n := newFakeNet()
		nodes := makeNodes(t, n, []string{"p", "q", "a", "c"}, nil)
		p, q, a, c := nodes[0], nodes[1], nodes[2], nodes[3]
		n.setNAT(a.addr.Addr(), netip.MustParseAddr("203.0.113.1"), false)
		n.setNAT(c.addr.Addr(), netip.MustParseAddr("203.0.113.2"), true)
		runNodes(t, nodes)
		want := map[*node]Type{p: TypeNone, q: TypeNone, a: TypeEndpointIndependent, c: TypeSymmetric}
		took := waitFor(t, 20*time.Second, "every machine names its NAT", func() bool {
			for nd, w := range want {
				if nd.mgr.Status().NAT != w {
					return false
				}
			}
			return true
		})
		t.Logf("classified after %v", took)
		if r := c.mgr.Status().Reflexive; len(r) < 2 {
			t.Errorf("c behind a symmetric NAT saw %d mappings, want one per machine that answered: %v", len(r), r)
		}
	})
}
