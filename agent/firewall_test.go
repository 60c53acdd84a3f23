package agent

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

func TestCompileGuards(t *testing.T) {
	machines := []*record.Machine{
		{ID: "i1", Name: "m1", Subnet: "10.210.1.0/24"},
		{ID: "i2", Name: "m2", Subnet: "10.210.2.0/24"},
		{ID: "i3", Name: "m3", Subnet: "10.210.3.0/24", Roles: []string{"ingress"}},
	}
	ctr := func(machine, service, addr string) *record.Container {
		return &record.Container{MachineID: machine, ID: service + addr, Service: service, Address: addr, State: "running"}
	}
	base := []*record.Container{
		ctr("i1", "db", "10.210.1.5"), ctr("i2", "db", "10.210.2.5"),
		ctr("i2", "web", "10.210.2.7"), ctr("i3", "web", "10.210.3.7"),
		ctr("i2", "other", "10.210.2.9"),
		ctr("i1", "open", "10.210.1.8"),
	}
	svc := func(name string, allow ...string) *record.Service {
		return &record.Service{Name: name, AllowFrom: allow}
	}
	for _, tc := range []struct {
		name       string
		containers []*record.Container
		services   []*record.Service
		want       []runtime.Guard
		problem    string
	}{
		{"no allow-from: open, no guard", base, []*record.Service{svc("db"), svc("open")}, nil, ""},
		{"service: its containers everywhere, and db's own", base, []*record.Service{svc("db", "web")},
			[]runtime.Guard{{Service: "db", Protect: addrs("10.210.1.5"), Allow: addrs("10.210.1.5", "10.210.2.5", "10.210.2.7", "10.210.3.7")}}, ""},
		{"machine and ingress: machine addresses", base, []*record.Service{svc("db", "machine:m2", "ingress")},
			[]runtime.Guard{{Service: "db", Protect: addrs("10.210.1.5"), Allow: addrs("10.210.1.5", "10.210.2.5", "10.210.2.1", "10.210.3.1")}}, ""},
		{"no container here: nothing to guard", base, []*record.Service{svc("web", "db")}, nil, ""},
		{"unknown names allow nobody yet", base, []*record.Service{svc("db", "ghost", "machine:m9")},
			[]runtime.Guard{{Service: "db", Protect: addrs("10.210.1.5"), Allow: addrs("10.210.1.5", "10.210.2.5")}}, ""},
		{"a bad entry is reported and allows nobody", base, []*record.Service{svc("db", "group:x", "web")},
			[]runtime.Guard{{Service: "db", Protect: addrs("10.210.1.5"), Allow: addrs("10.210.1.5", "10.210.2.5", "10.210.2.7", "10.210.3.7")}}, `unknown kind "group"`},
		{"a record claiming an address outside its machine's subnet is ignored",
			append(slices.Clone(base), ctr("i2", "web", "10.210.1.9"), ctr("i2", "web", "10.210.2.1"), ctr("gone", "web", "10.210.9.9")),
			[]*record.Service{svc("db", "web")},
			[]runtime.Guard{{Service: "db", Protect: addrs("10.210.1.5"), Allow: addrs("10.210.1.5", "10.210.2.5", "10.210.2.7", "10.210.3.7")}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := compileGuards("i1", machines, tc.containers, tc.services)
			if len(got) != len(tc.want) {
				t.Fatalf("guards = %+v, want %+v", got, tc.want)
			}
			for i := range got {
				sortAddrs(got[i].Allow)
				sortAddrs(tc.want[i].Allow)
				if got[i].Service != tc.want[i].Service || !slices.Equal(got[i].Protect, tc.want[i].Protect) || !slices.Equal(got[i].Allow, tc.want[i].Allow) {
					t.Errorf("guard %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
			if tc.problem == "" && len(problems) > 0 || tc.problem != "" && (len(problems) != 1 || !strings.Contains(problems[0].Error(), tc.problem)) {
				t.Errorf("problems = %v, want %q", problems, tc.problem)
			}
		})
	}
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func sortAddrs(a []netip.Addr) { slices.SortFunc(a, func(x, y netip.Addr) int { return x.Compare(y) }) }

func TestListenPort(t *testing.T) {
	for _, tc := range []struct {
		addr, def string
		want      uint16
		ok        bool
	}{{"", ":80", 80, true}, {":8080", ":80", 8080, true}, {"-", ":443", 0, false}, {"bad", ":80", 0, false}} {
		if p, ok := listenPort(tc.addr, tc.def); p != tc.want || ok != tc.ok {
			t.Errorf("listenPort(%q) = %d, %v", tc.addr, p, ok)
		}
	}
}
