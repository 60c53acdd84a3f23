package nat

import (
	"net/netip"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/tun"
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

// TestAddObservation feeds one manager the answers of a steady direct
// path (every answered probe carries one) and of a change. Repeats only
// refresh: the list stays one entry per server and mapping, and they
// allocate nothing (the old code kept each answer and reclassified on
// every one, 7 allocations and ~6 KB each, half of what an idle agent
// with 20 peers allocated). Something new still counts at once: a new
// mapping is fresh, a second server seeing another port makes the NAT
// symmetric.
func TestAddObservation(t *testing.T) {
	k, err := tun.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{PrivateKey: k, Device: &fakeDevice{}, Socket: &fakeSocket{},
		Interfaces: func() ([]Interface, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	mapped := netip.MustParseAddrPort("203.0.113.1:51820")
	server := func(i int) netip.AddrPort { return netip.AddrPortFrom(addrOf(2+i%20), 51820) }
	now := time.Now()
	for i := range 200 { // 20 servers, each answering ten times
		now = now.Add(100 * time.Millisecond)
		m.addObservation(server(i), mapped, now)
	}
	if len(m.obs) != 20 || m.natType != TypeEndpointIndependent {
		t.Fatalf("after 200 answers of 20 servers: %d observations, NAT %s; want 20, %s", len(m.obs), m.natType, TypeEndpointIndependent)
	}
	if got := Reflexive(m.obs, now); len(got) != 1 || got[0] != mapped {
		t.Fatalf("Reflexive = %v, want [%v]", got, mapped)
	}
	i := 0
	if allocs := testing.AllocsPerRun(100, func() {
		now = now.Add(100 * time.Millisecond)
		m.addObservation(server(i), mapped, now)
		i++
	}); allocs != 0 {
		t.Errorf("a repeated answer allocates %v times, want 0", allocs)
	}

	// Another server sees another port: symmetric, and the port is a new
	// mapping (published soon).
	m.pubSoon = false
	other := netip.MustParseAddrPort("203.0.113.1:40001")
	m.addObservation(netip.AddrPortFrom(addrOf(40), 51820), other, now)
	if m.natType != TypeSymmetric || !m.pubSoon {
		t.Errorf("a second mapping: NAT %s, publish soon %v; want %s, true", m.natType, m.pubSoon, TypeSymmetric)
	}
	// Answers age out after observationTTL, refreshed or not.
	now = now.Add(observationTTL + time.Second)
	m.addObservation(server(0), mapped, now)
	if len(m.obs) != 1 {
		t.Errorf("after observationTTL: %d observations, want 1 (the new answer)", len(m.obs))
	}
}

func BenchmarkAddObservation(b *testing.B) {
	k, _ := tun.GeneratePrivateKey()
	m, err := New(Config{PrivateKey: k, Device: &fakeDevice{}, Socket: &fakeSocket{},
		Interfaces: func() ([]Interface, error) { return nil, nil }})
	if err != nil {
		b.Fatal(err)
	}
	mapped := netip.MustParseAddrPort("203.0.113.1:51820")
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		now = now.Add(100 * time.Millisecond)
		m.addObservation(netip.AddrPortFrom(addrOf(2+i%20), 51820), mapped, now)
	}
}
