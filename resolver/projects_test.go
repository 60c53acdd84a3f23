package resolver

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
	"github.com/uncloud-mesh/uncloud/record"
)

// projectsFixture: a default-project db and web, db in projects blog and
// shop, cache in blog only, on two machines.
func projectsFixture() Input {
	c := func(m, n, service, addr string) *record.Container {
		return &record.Container{MachineID: "id" + m, ID: "c" + n, Name: "c" + n, Service: service, Address: addr, State: "running",
			Ports: []record.ContainerPort{{Port: 5432, Protocol: "tcp"}}}
	}
	return Input{Self: "id1",
		Machines: []*record.Machine{{ID: "id1", Name: "m1", Subnet: "10.210.1.0/24"}, {ID: "id2", Name: "m2", Subnet: "10.210.2.0/24"}},
		Containers: []*record.Container{
			c("1", "1", "db", "10.210.1.2"),
			c("1", "2", "web", "10.210.1.3"),
			c("1", "3", "db.blog", "10.210.1.4"),
			c("2", "4", "db.shop", "10.210.2.2"),
			c("2", "5", "cache.blog", "10.210.2.3"),
			c("2", "6", "web.blog", "10.210.2.4"), // a blog container asks
			c("2", "7", "api.shop", "10.210.2.5"), // a shop container asks
		},
		Services: []*record.Service{{Name: "db"}, {Name: "web"}, {Name: "db.blog"}, {Name: "db.shop"}, {Name: "cache.blog"},
			{Name: "web.blog"}, {Name: "api.shop"}, {Name: "idle.shop"}}}
}

func askFrom(t *testing.T, s *Server, name string, qtype uint16, from string) *dns.Msg {
	t.Helper()
	m := question(name, qtype)
	p, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var rot uint32
	var addr netip.Addr
	if from != "" {
		addr = netip.MustParseAddr(from)
	}
	resp, _ := s.respond(p, make([]byte, 0, maxMessage), make([]byte, 0, maxKey+1), false, &rot, addr)
	r := new(dns.Msg)
	if err := r.Unpack(resp); err != nil {
		t.Fatalf("%s from %s: answer does not parse: %v", name, from, err)
	}
	return r
}

// TestProjectNames: <service>.<project>.internal everywhere, the default
// project's also as <service>.default.internal, and a project's container
// sees its own project's <service>.internal before the default's.
func TestProjectNames(t *testing.T) {
	s := testServer(t, projectsFixture())
	const host, blog, shop, dflt = "10.210.1.1", "10.210.2.4", "10.210.2.5", "10.210.1.3"
	tests := []struct {
		name, from string
		qtype      uint16
		rcode      int
		want       []string
	}{
		{"db.internal.", host, dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.2"}},         // the default project's
		{"db.internal.", dflt, dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.2"}},         // a default-project container too
		{"db.internal.", blog, dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.4"}},         // blog's own
		{"db.internal.", shop, dns.TypeA, dns.RcodeSuccess, []string{"10.210.2.2"}},         // shop's own
		{"db.internal.", "", dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.2"}},           // no client address
		{"db.blog.internal.", shop, dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.4"}},    // across projects by full name
		{"db.shop.internal.", host, dns.TypeA, dns.RcodeSuccess, []string{"10.210.2.2"}},    //
		{"db.default.internal.", blog, dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.2"}}, // the default's from inside a project
		{"web.internal.", blog, dns.TypeA, dns.RcodeSuccess, []string{"10.210.2.4"}},        // blog's web shadows the default's for blog
		{"web.internal.", shop, dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.3"}},        // shop has no web: the default's
		{"cache.internal.", host, dns.TypeA, dns.RcodeSuccess, []string{"10.210.2.3"}},      // one project alone has cache
		{"cache.internal.", shop, dns.TypeA, dns.RcodeSuccess, []string{"10.210.2.3"}},      //
		{"api.internal.", blog, dns.TypeA, dns.RcodeSuccess, []string{"10.210.2.5"}},        //
		{"nearest.db.internal.", blog, dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.4"}}, //
		{"_5432._tcp.db.internal.", shop, dns.TypeSRV, dns.RcodeSuccess, []string{"0 1 5432 c4.m2.machine.internal."}},
		{"idle.internal.", shop, dns.TypeA, dns.RcodeSuccess, nil},     // a record, no container: NODATA in its project
		{"nope.internal.", blog, dns.TypeA, dns.RcodeNameError, nil},   // falls through to the zone
		{"internal.", blog, dns.TypeSOA, dns.RcodeSuccess, []string{}}, // the apex still answers
	}
	for _, tc := range tests {
		r := askFrom(t, s, tc.name, tc.qtype, tc.from)
		if r.Rcode != tc.rcode {
			t.Errorf("%s %s from %q: rcode %s, want %s", tc.name, dns.TypeToString[tc.qtype], tc.from, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			continue
		}
		if tc.want == nil {
			continue
		}
		if tc.qtype == dns.TypeSOA {
			if len(r.Answer) != 1 {
				t.Errorf("%s SOA from %q: %d answers", tc.name, tc.from, len(r.Answer))
			}
			continue
		}
		if got := values(r.Answer); !slices.Equal(got, tc.want) {
			t.Errorf("%s %s from %q: %v, want %v", tc.name, dns.TypeToString[tc.qtype], tc.from, got, tc.want)
		}
	}
	// dns ls lists a project's own names, saying whose they are.
	listed := false
	for _, n := range s.idx.zone.Load().names {
		if n.Name == "db.internal." && n.Type == "A" && n.Project == "blog" && slices.Equal(n.Records, []string{"10.210.1.4"}) {
			listed = true
		}
	}
	if !listed {
		t.Error("blog's db.internal. is not listed with its project")
	}
	// Two projects have db and none is the default's: no bare name.
	in := projectsFixture()
	in.Containers, in.Services = in.Containers[2:], in.Services[2:]
	s = testServer(t, in)
	if r := askFrom(t, s, "db.internal.", dns.TypeA, "10.210.1.1"); r.Rcode != dns.RcodeNameError {
		t.Errorf("db.internal. with two projects' db and no default one: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if r := askFrom(t, s, "db.internal.", dns.TypeA, "10.210.2.5"); len(r.Answer) != 1 {
		t.Errorf("db.internal. from shop: %v, want shop's", r.Answer)
	}
}
