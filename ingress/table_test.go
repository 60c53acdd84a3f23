package ingress

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
)

type reachSet map[string]bool

func (r reachSet) Reachable(id string) bool { return r[id] }
func (r reachSet) Changed() <-chan struct{} { return nil }

func TestBuildTable(t *testing.T) {
	c := func(m, id, svc, addr, state, health string) *record.Container {
		return &record.Container{MachineID: m, ID: id, Service: svc, Address: addr, State: state, Health: health}
	}
	v := view{
		self: "m1",
		services: map[string]*record.Service{
			"web":   {Name: "web", Ports: []string{"app.example.com:8080/https", "8081", "53/udp", "8082:8080", "127.0.0.1:9000-9001:90-91/udp"}}, // Docker forms: no route
			"api":   {Name: "api", Ports: []string{"App.Example.com/api:9000/http"}},
			"dup":   {Name: "dup", Ports: []string{"app.example.com:1234/http"}},
			"clash": {Name: "clash", Ports: []string{"app.example.com:7000/http"}},
			"wild":  {Name: "wild", Ports: []string{"*.example.org:80/https"}},
			"bad":   {Name: "bad", Ports: []string{"not a port", "x.example.com:0/http"}},
			"empty": {Name: "empty", Ports: []string{"empty.example.com:80/http"}},
		},
		containers: map[string]*record.Container{},
		machines:   map[string]*record.Machine{},
	}
	for _, x := range []*record.Container{
		c("m1", "a", "web", "10.210.1.2", "running", ""),
		c("m2", "b", "web", "10.210.2.2", "running", "healthy"),
		c("m3", "c", "web", "10.210.3.2", "running", ""),          // m3 unreachable
		c("m1", "d", "web", "10.210.1.3", "exited", ""),           // not running
		c("m2", "e", "web", "10.210.2.3", "running", "unhealthy"), // failing health check
		c("m2", "f", "web", "10.210.2.4", "running", "starting"),  // not ready yet
		c("m1", "g", "web", "", "running", ""),                    // no address
		c("m1", "h", "api", "10.210.1.4", "running", ""),
		c("m2", "i", "empty", "10.210.2.9", "exited", ""),
	} {
		v.containers[x.Key()] = x
	}
	tb := buildTable(v, reachSet{"m2": true}, newPool(), slog.New(slog.NewTextHandler(io.Discard, nil)))

	if got := len(tb.routes); got != 4 {
		t.Fatalf("routes: got %d", got)
	}
	tests := []struct {
		host, path   string
		wantService  string
		wantBackends []string
	}{
		{"app.example.com", "/", "clash", []string{}}, // clash has no containers
		{"APP.example.com:443", "/x", "clash", nil},
		{"app.example.com", "/api", "api", []string{"10.210.1.4:9000"}},
		{"app.example.com", "/api/v1", "api", nil},
		{"app.example.com", "/apix", "clash", nil},
		{"a.example.org", "/", "wild", nil},
		{"example.org", "/", "", nil},
		{"a.b.example.org", "/", "", nil},
		{"app.example.com.", "/", "clash", nil},
		{"nowhere.test", "/", "", nil},
		{"empty.example.com", "/", "empty", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.host+tt.path, func(t *testing.T) {
			r := tb.lookup(tt.host, tt.path)
			if tt.wantService == "" {
				if r != nil {
					t.Fatalf("lookup(%q, %q) = service %s, want no route", tt.host, tt.path, r.Service)
				}
				return
			}
			if r == nil || r.Service != tt.wantService {
				t.Fatalf("lookup(%q, %q) = %v, want service %s", tt.host, tt.path, r, tt.wantService)
			}
			if tt.wantBackends != nil {
				var got []string
				for _, b := range r.Backends {
					got = append(got, b.addr)
				}
				if !slices.Equal(got, tt.wantBackends) && !(len(got) == 0 && len(tt.wantBackends) == 0) {
					t.Fatalf("backends %v, want %v", got, tt.wantBackends)
				}
			}
		})
	}
	// "clash", "dup" and "web" publish app.example.com at "/": the first
	// by name serves, the others are reported.
	r := tb.lookup("app.example.com", "/")
	if !slices.Equal(r.Conflicts, []string{"dup", "web"}) {
		t.Fatalf("conflicts %v, want [dup web]", r.Conflicts)
	}
	if got := tb.managedNames(); !slices.Equal(got, nil) {
		// clash serves app.example.com over http, so nothing is https with a concrete name
		t.Fatalf("managed names %v, want none", got)
	}

	// Without the clashing services, web's https route wins and its
	// backends are the usable containers: running, healthy or without a
	// check, with an address, on this machine or a reachable one.
	delete(v.services, "clash")
	delete(v.services, "dup")
	tb = buildTable(v, reachSet{"m2": true}, newPool(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	r = tb.lookup("app.example.com", "/")
	var got []string
	for _, b := range r.Backends {
		got = append(got, b.addr)
	}
	if r.Service != "web" || !r.HTTPS || !slices.Equal(got, []string{"10.210.1.2:8080", "10.210.2.2:8080"}) {
		t.Fatalf("web route: service %s https %v backends %v", r.Service, r.HTTPS, got)
	}
	if names := tb.managedNames(); !slices.Equal(names, []string{"app.example.com"}) {
		t.Fatalf("managed names %v", names)
	}
	if !tb.servesName("x.example.org") || tb.servesName("example.org") || !tb.servesName("app.example.com") {
		t.Fatal("servesName wrong for wildcard or exact names")
	}
}

func TestPoolKeepsBackendState(t *testing.T) {
	p := newPool()
	c := &record.Container{MachineID: "m1", ID: "a", Address: "10.210.1.2"}
	b := p.get(c, 80)
	b.inflight.Add(3)
	if p.get(c, 80) != b {
		t.Fatal("same container and port must keep its backend across tables")
	}
	c2 := &record.Container{MachineID: "m1", ID: "new", Address: "10.210.1.2"}
	if p.get(c2, 80) == b {
		t.Fatal("a new container on a reused address must start clean")
	}
	p.keep(map[string]bool{})
	if len(p.m) != 0 {
		t.Fatal("keep must forget unused backends")
	}
}

func TestPick(t *testing.T) {
	mk := func(n int) *Route {
		r := &Route{}
		for i := 0; i < n; i++ {
			r.Backends = append(r.Backends, &backend{addr: fmt.Sprint(i)})
		}
		return r
	}
	t.Run("round robin spreads evenly", func(t *testing.T) {
		r := mk(3)
		count := map[string]int{}
		for i := 0; i < 300; i++ {
			count[pick(r, RoundRobin, nil).addr]++
		}
		for a, n := range count {
			if n != 100 {
				t.Fatalf("backend %s got %d of 300", a, n)
			}
		}
	})
	t.Run("least connections prefers idle", func(t *testing.T) {
		r := mk(3)
		r.Backends[0].inflight.Store(5)
		r.Backends[1].inflight.Store(1)
		r.Backends[2].inflight.Store(7)
		for i := 0; i < 10; i++ {
			if b := pick(r, LeastConnections, nil); b != r.Backends[1] {
				t.Fatalf("picked %s, want the least loaded 1", b.addr)
			}
		}
	})
	t.Run("failed backend put aside, then back", func(t *testing.T) {
		r := mk(2)
		r.Backends[0].markFailed(50 * time.Millisecond)
		for i := 0; i < 10; i++ {
			if b := pick(r, RoundRobin, nil); b != r.Backends[1] {
				t.Fatalf("picked the failed backend")
			}
		}
		time.Sleep(60 * time.Millisecond)
		seen := map[*backend]bool{}
		for i := 0; i < 4; i++ {
			seen[pick(r, RoundRobin, nil)] = true
		}
		if !seen[r.Backends[0]] {
			t.Fatal("backend not back after its fail timeout")
		}
	})
	t.Run("skip and all down", func(t *testing.T) {
		r := mk(2)
		for _, b := range r.Backends {
			b.markFailed(time.Minute)
		}
		if b := pick(r, RoundRobin, r.Backends[0]); b != r.Backends[1] {
			t.Fatal("with all down, the one not skipped is still tried")
		}
		if b := pick(mk(1), RoundRobin, nil); b == nil {
			t.Fatal("single backend not picked")
		}
		one := mk(1)
		if b := pick(one, RoundRobin, one.Backends[0]); b != nil {
			t.Fatal("the skipped only backend was picked")
		}
		if pick(&Route{}, RoundRobin, nil) != nil {
			t.Fatal("empty route picked something")
		}
	})
}

func TestIssuerFor(t *testing.T) {
	machines := []string{"m1", "m2", "m3", "m4"}
	count := map[string]int{}
	for i := 0; i < 400; i++ {
		name := fmt.Sprintf("site%d.example.com", i)
		a := issuerFor(name, machines)
		if b := issuerFor(name, []string{"m4", "m3", "m2", "m1"}); a != b {
			t.Fatalf("issuer depends on order: %s vs %s", a, b)
		}
		count[a]++
		// Removing a machine moves only its names.
		without := slices.DeleteFunc(slices.Clone(machines), func(m string) bool { return m == "m2" })
		if c := issuerFor(name, without); a != "m2" && c != a {
			t.Fatalf("%s moved from %s to %s when m2 left", name, a, c)
		}
	}
	for _, m := range machines {
		if count[m] < 60 {
			t.Fatalf("uneven spread: %v", count)
		}
	}
	if issuerFor("x", nil) != "" {
		t.Fatal("no machines must mean no issuer")
	}
}

func TestHostOnly(t *testing.T) {
	for in, want := range map[string]string{
		"a.b": "a.b", "a.b:8080": "a.b", "[::1]:80": "::1", "[::1]": "::1", "": "",
	} {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}
