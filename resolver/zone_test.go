package resolver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/uncloud-mesh/uncloud/record"
)

// fixture is three reachable machines and one that is not, a service
// spread over them with one starting, one unhealthy and one stopped
// container, and a service with no container.
func fixture() Input {
	ms := []*record.Machine{
		{ID: "id1", Name: "m1", Subnet: "10.210.1.0/24"},
		{ID: "id2", Name: "M2", Subnet: "10.210.2.0/24"},
		{ID: "id3", Name: "m3", Subnet: "10.210.3.0/24"},
		{ID: "id4", Name: "m4", Subnet: "10.210.4.0/24"}, // partitioned away
		{ID: "id5", Name: "bad name", Subnet: "10.210.5.0/24"},
	}
	web := func(m string, n int, state, health string) *record.Container {
		return &record.Container{MachineID: "id" + m, ID: fmt.Sprintf("c%s%d", m, n), Name: fmt.Sprintf("web-%s%d", m, n),
			Service: "web", Address: fmt.Sprintf("10.210.%s.%d", m, n+1), State: state, Health: health,
			Ports: []record.ContainerPort{{Port: 80, Protocol: "tcp", Name: "http"}, {Port: 53, Protocol: "udp"}}}
	}
	cs := []*record.Container{
		web("1", 1, "running", ""),
		web("1", 2, "running", "healthy"),
		web("2", 1, "running", "healthy"),
		web("2", 2, "running", "starting"), // not in the service (yet), still by name
		web("3", 1, "running", ""),
		web("3", 2, "running", "unhealthy"), // not in the service, still by name
		web("3", 3, "exited", ""),           // nowhere
		web("4", 1, "running", ""),          // unreachable machine
		{MachineID: "id2", ID: "db", Name: "DB", Service: "", Address: "10.210.2.9", State: "running"},
	}
	return Input{Self: "id1", Machines: ms, Containers: cs,
		Services:  []*record.Service{{Name: "web"}, {Name: "empty"}},
		Reachable: func(id string) bool { return id != "id4" }}
}

func testServer(t testing.TB, in Input) *Server {
	t.Helper()
	x := NewIndex(in.Self, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	z, _ := build(in)
	x.zone.Store(z)
	s, err := NewServer(Config{Index: x, ResolvConf: "/nonexistent", Logger: x.log})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ask sends m through the packet handler and parses the answer.
func ask(t testing.TB, s *Server, m *dns.Msg, tcp bool) *dns.Msg {
	t.Helper()
	p, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var rot uint32
	resp, act := s.respond(p, make([]byte, 0, maxMessage), make([]byte, 0, maxKey+1), tcp, &rot, netip.Addr{})
	if act == actForward {
		resp = refused(p)
	}
	if resp == nil {
		t.Fatalf("%v: no answer (action %d)", m.Question, act)
	}
	r := new(dns.Msg)
	if err := r.Unpack(resp); err != nil {
		t.Fatalf("%v: answer does not parse: %v", m.Question, err)
	}
	if r.Id != m.Id {
		t.Fatalf("answer id %d, query id %d", r.Id, m.Id)
	}
	return r
}

func question(name string, t uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, t)
	return m
}

// values renders the answer records' data, sorted.
func values(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, rdataString(rr))
	}
	slices.Sort(out)
	return out
}

func TestNames(t *testing.T) {
	s := testServer(t, fixture())
	tests := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string // sorted answer data
		soa   bool     // SOA in authority
	}{
		{"m1.machine.internal.", dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.1"}, false},
		{"m2.machine.internal.", dns.TypeA, dns.RcodeSuccess, []string{"10.210.2.1"}, false},
		{"m4.machine.internal.", dns.TypeA, dns.RcodeNameError, nil, true}, // unreachable
		{"m1.machine.internal.", dns.TypeAAAA, dns.RcodeSuccess, nil, true},
		{"web-11.m1.machine.internal.", dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.2"}, false},
		{"web-32.m3.machine.internal.", dns.TypeA, dns.RcodeSuccess, []string{"10.210.3.3"}, false}, // unhealthy, named
		{"web-22.m2.machine.internal.", dns.TypeA, dns.RcodeSuccess, []string{"10.210.2.3"}, false}, // starting, named
		{"web-33.m3.machine.internal.", dns.TypeA, dns.RcodeNameError, nil, true},                   // exited
		{"web-41.m4.machine.internal.", dns.TypeA, dns.RcodeNameError, nil, true},                   // unreachable
		{"db.m2.machine.internal.", dns.TypeA, dns.RcodeSuccess, []string{"10.210.2.9"}, false},
		{"web.internal.", dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.2", "10.210.1.3", "10.210.2.2", "10.210.3.2"}, false},
		{"web.internal.", dns.TypeAAAA, dns.RcodeSuccess, nil, true},
		{"web.internal.", dns.TypeMX, dns.RcodeSuccess, nil, true},
		{"nearest.web.internal.", dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.2", "10.210.1.3", "10.210.2.2", "10.210.3.2"}, false},
		{"empty.internal.", dns.TypeA, dns.RcodeSuccess, nil, true},
		{"nearest.empty.internal.", dns.TypeA, dns.RcodeSuccess, nil, true},
		{"nope.internal.", dns.TypeA, dns.RcodeNameError, nil, true},
		{"a.b.nope.internal.", dns.TypeA, dns.RcodeNameError, nil, true},
		{"machine.internal.", dns.TypeA, dns.RcodeSuccess, nil, true}, // empty non-terminal
		{"m1.machine.internal.", dns.TypeSRV, dns.RcodeSuccess, nil, true},
		{"internal.", dns.TypeSOA, dns.RcodeSuccess, []string{"m1.machine.internal. hostmaster.internal. 0 3600 600 86400 5"}, false},
		{"internal.", dns.TypeNS, dns.RcodeSuccess, []string{"m1.machine.internal."}, false},
		{"_80._tcp.web.internal.", dns.TypeSRV, dns.RcodeSuccess, []string{
			"0 1 80 web-11.m1.machine.internal.", "0 1 80 web-12.m1.machine.internal.",
			"0 1 80 web-21.m2.machine.internal.", "0 1 80 web-31.m3.machine.internal."}, false},
		{"_http._tcp.web.internal.", dns.TypeSRV, dns.RcodeSuccess, []string{
			"0 1 80 web-11.m1.machine.internal.", "0 1 80 web-12.m1.machine.internal.",
			"0 1 80 web-21.m2.machine.internal.", "0 1 80 web-31.m3.machine.internal."}, false},
		{"_53._udp.web.internal.", dns.TypeSRV, dns.RcodeSuccess, []string{
			"0 1 53 web-11.m1.machine.internal.", "0 1 53 web-12.m1.machine.internal.",
			"0 1 53 web-21.m2.machine.internal.", "0 1 53 web-31.m3.machine.internal."}, false},
		{"_53._tcp.web.internal.", dns.TypeSRV, dns.RcodeNameError, nil, true},
		{"_tcp.web.internal.", dns.TypeSRV, dns.RcodeSuccess, nil, true}, // empty non-terminal
		{"2.1.210.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"web-11.m1.machine.internal."}, false},
		{"1.2.210.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"m2.machine.internal."}, false},
		{"2.4.210.10.in-addr.arpa.", dns.TypePTR, dns.RcodeNameError, nil, true},
		{"WeB.InTeRnAl.", dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.2", "10.210.1.3", "10.210.2.2", "10.210.3.2"}, false},
		{"M1.MACHINE.INTERNAL.", dns.TypeA, dns.RcodeSuccess, []string{"10.210.1.1"}, false},
		{"web.internal.", dns.TypeANY, dns.RcodeSuccess, []string{"10.210.1.2", "10.210.1.3", "10.210.2.2", "10.210.3.2"}, false},
		{"example.com.", dns.TypeA, dns.RcodeRefused, nil, false}, // no upstreams here
	}
	for _, tc := range tests {
		t.Run(tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			for _, edns := range []bool{false, true} {
				m := question(tc.name, tc.qtype)
				if edns {
					m.SetEdns0(1232, true)
				}
				r := ask(t, s, m, false)
				if r.Rcode != tc.rcode {
					t.Fatalf("edns %v: rcode %s, want %s", edns, dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
				if got := values(r.Answer); !slices.Equal(got, tc.want) {
					t.Fatalf("edns %v: answers %q, want %q", edns, got, tc.want)
				}
				hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
				if hasSOA != tc.soa {
					t.Fatalf("edns %v: authority %v, want SOA: %v", edns, r.Ns, tc.soa)
				}
				if r.Question[0].Name != tc.name {
					t.Fatalf("question echoed as %q, want the client's %q", r.Question[0].Name, tc.name)
				}
				for _, rr := range append(r.Answer, r.Ns...) {
					if rr.Header().Ttl != TTL {
						t.Fatalf("TTL %d in %v", rr.Header().Ttl, rr)
					}
				}
				if tc.rcode != dns.RcodeRefused && !r.Authoritative {
					t.Fatal("zone answer is not authoritative")
				}
				if opt := r.IsEdns0(); (opt != nil) != edns {
					t.Fatalf("query edns %v, answer OPT %v", edns, opt)
				} else if opt != nil && !opt.Do() {
					t.Fatal("DO bit not copied into the answer")
				}
			}
		})
	}
}

func TestSRVAdditional(t *testing.T) {
	s := testServer(t, fixture())
	r := ask(t, s, question("_http._tcp.web.internal.", dns.TypeSRV), false)
	targets := map[string]string{}
	for _, rr := range r.Extra {
		if a, ok := rr.(*dns.A); ok {
			targets[a.Hdr.Name] = a.A.String()
		}
	}
	for _, rr := range r.Answer {
		srv := rr.(*dns.SRV)
		if targets[srv.Target] == "" {
			t.Fatalf("SRV target %s has no A record in the additional section %v", srv.Target, r.Extra)
		}
	}
}

func TestNearestPutsLocalFirst(t *testing.T) {
	s := testServer(t, fixture())
	for range 10 {
		r := ask(t, s, question("nearest.web.internal.", dns.TypeA), false)
		first := values(r.Answer[:2])
		if !slices.Equal(first, []string{"10.210.1.2", "10.210.1.3"}) {
			t.Fatalf("nearest answers start with %v, want this machine's containers", first)
		}
	}
}

func TestRotation(t *testing.T) {
	s := testServer(t, fixture())
	m := question("web.internal.", dns.TypeA)
	p, _ := m.Pack()
	var rot uint32
	firsts := map[string]int{}
	orders := map[string]bool{}
	for range 40 {
		resp, _ := s.respond(p, make([]byte, 0, 512), make([]byte, 0, 256), false, &rot, netip.Addr{})
		r := new(dns.Msg)
		if err := r.Unpack(resp); err != nil {
			t.Fatal(err)
		}
		var order []string
		for _, rr := range r.Answer {
			order = append(order, rdataString(rr))
		}
		firsts[order[0]]++
		orders[strings.Join(order, ",")] = true
	}
	if len(firsts) != 4 {
		t.Fatalf("first addresses over 40 queries: %v; want each of the 4 first in turn", firsts)
	}
	for a, n := range firsts {
		if n != 10 {
			t.Fatalf("address %s first %d times of 40, want 10 (even rotation): %v", a, n, firsts)
		}
	}
}

// bigService has n running containers of service "big" on machine 1.
func bigService(n int) Input {
	in := Input{Self: "id1", Machines: []*record.Machine{{ID: "id1", Name: "m1", Subnet: "10.210.1.0/24"}}}
	for i := range n {
		in.Containers = append(in.Containers, &record.Container{MachineID: "id1", ID: fmt.Sprint(i),
			Name: fmt.Sprintf("big-%d", i), Service: "big", Address: fmt.Sprintf("10.210.1.%d", i+2), State: "running"})
	}
	return in
}

func TestTruncationAndEDNS(t *testing.T) {
	s := testServer(t, bigService(100)) // 100 A records: 1,600+ bytes
	tests := []struct {
		name    string
		edns    uint16 // 0: no OPT
		tcp     bool
		wantTC  bool
		answers int
	}{
		{"udp plain: 512 bytes", 0, false, true, 0},
		{"udp edns 1232", 1232, false, true, 0},
		{"udp edns below 512 counts as 512", 100, false, true, 0},
		{"udp edns 4096", 4096, false, false, 100},
		{"tcp", 0, true, false, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := question("big.internal.", dns.TypeA)
			if tc.edns > 0 {
				m.SetEdns0(tc.edns, false)
			}
			r := ask(t, s, m, tc.tcp)
			if r.Truncated != tc.wantTC || len(r.Answer) != tc.answers {
				t.Fatalf("TC %v with %d answers, want TC %v with %d", r.Truncated, len(r.Answer), tc.wantTC, tc.answers)
			}
			if tc.edns > 0 && r.IsEdns0() == nil {
				t.Fatal("no OPT in the answer to an EDNS query")
			}
		})
	}
	// A few records fit in 512 bytes.
	s = testServer(t, bigService(8))
	if r := ask(t, s, question("big.internal.", dns.TypeA), false); r.Truncated || len(r.Answer) != 8 {
		t.Fatalf("8 records: TC %v, %d answers", r.Truncated, len(r.Answer))
	}
}

func TestErrors(t *testing.T) {
	s := testServer(t, fixture())
	notify := question("web.internal.", dns.TypeSOA)
	notify.Opcode = dns.OpcodeNotify
	if r := ask(t, s, notify, false); r.Rcode != dns.RcodeNotImplemented {
		t.Fatalf("NOTIFY: %s, want NOTIMP", dns.RcodeToString[r.Rcode])
	}
	ch := question("web.internal.", dns.TypeTXT)
	ch.Question[0].Qclass = dns.ClassCHAOS
	if r := ask(t, s, ch, false); r.Rcode != dns.RcodeRefused {
		t.Fatalf("CHAOS class in the zone: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	v1 := question("web.internal.", dns.TypeA)
	v1.SetEdns0(1232, false)
	v1.IsEdns0().SetVersion(1)
	if r := ask(t, s, v1, false); r.Rcode != dns.RcodeBadVers {
		t.Fatalf("EDNS version 1: %s, want BADVERS", dns.RcodeToString[r.Rcode])
	}
	two := question("web.internal.", dns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	if r := ask(t, s, two, false); r.Rcode != dns.RcodeFormatError {
		t.Fatalf("two questions: %s, want FORMERR", dns.RcodeToString[r.Rcode])
	}
	// A response is never answered (no loops between servers).
	resp := question("web.internal.", dns.TypeA)
	resp.Response = true
	p, _ := resp.Pack()
	var rot uint32
	if out, act := s.respond(p, nil, make([]byte, 0, 256), false, &rot, netip.Addr{}); act != actDrop || out != nil {
		t.Fatalf("a response got action %d", act)
	}
	// Garbage after a header: FORMERR; less than a header: nothing.
	if out, act := s.respond([]byte{1, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 99}, nil, make([]byte, 0, 256), false, &rot, netip.Addr{}); act != actReply || out[3]&0xf != dns.RcodeFormatError || out[0] != 1 || out[1] != 2 {
		t.Fatalf("garbage: action %d, answer %x", act, out)
	}
	if _, act := s.respond([]byte{1, 2, 3}, nil, make([]byte, 0, 256), false, &rot, netip.Addr{}); act != actDrop {
		t.Fatalf("3 bytes: action %d", act)
	}
}

// A query whose name needs the slow path (a compression pointer) gets the
// same answer as a plain one.
func TestSlowPathAnswersLikeFast(t *testing.T) {
	s := testServer(t, fixture())
	// Header, then the question name as a pointer to a copy of
	// "web.internal." placed after the question, inside an extra record's
	// owner: build it by hand.
	m := question("web.internal.", dns.TypeA)
	m.Extra = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: "web.internal.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"x"}}}
	r := ask(t, s, m, false)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 4 {
		t.Fatalf("query with an extra record: %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
}

func TestQueryInProcess(t *testing.T) {
	s := testServer(t, fixture())
	r, err := s.Query(context.Background(), "web-21.M2.machine.internal", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if got := values(r.Answer); !slices.Equal(got, []string{"10.210.2.2"}) {
		t.Fatalf("answers %v", got)
	}
}

func TestSkippedRecordsAreReported(t *testing.T) {
	_, skipped := build(fixture())
	if len(skipped) != 1 || !strings.Contains(skipped[0], `"bad name"`) {
		t.Fatalf("skipped %q, want the machine named %q", skipped, "bad name")
	}
}
