package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

func TestParseConstraints(t *testing.T) {
	for _, tc := range []struct {
		in, want, wantErr string
	}{
		{in: "node.hostname==m1", want: "node.hostname==m1"},
		{in: "node.name == m1", want: "node.hostname==m1"},
		{in: "node.role!=ingress", want: "node.role!=ingress"},
		{in: "node.labels.disk==ssd", want: "node.labels.disk==ssd"},
		{in: "node.labels.a.b!=c", want: "node.labels.a.b!=c"},
		{in: "node.platform.arch==arm64", want: "node.platform.arch==arm64"},
		{in: "node.id==abc", want: "node.id==abc"},
		{in: "node.platform.os==linux", want: "node.platform.os==linux"},
		{in: "node.hostname=m1", wantErr: "use == or !="},
		{in: "node.hostname==", wantErr: "missing"},
		{in: "node.hostname==a==b", wantErr: "malformed"},
		{in: "engine.labels.x==1", wantErr: "is not node.hostname"},
		{in: "node.labels.==x", wantErr: "is not node.hostname"},
		{in: "", wantErr: "use == or !="},
	} {
		c, err := parseConstraint(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, api.ErrBadRequest) {
				t.Errorf("%q: %v, want error with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || c.String() != tc.want {
			t.Errorf("%q: %v %v, want %s", tc.in, c, err, tc.want)
		}
	}
}

func TestConstraintHolds(t *testing.T) {
	m := candidate{Machine: Machine{ID: "id1", Name: "m1", Roles: []string{"ingress"}, Labels: map[string]string{"disk": "ssd"}},
		capacity: Capacity{Arch: "aarch64"}}
	for s, want := range map[string]bool{
		"node.hostname==m1": true, "node.hostname!=m1": false, "node.id==id1": true,
		"node.role==ingress": true, "node.role!=ingress": false,
		"node.labels.disk==ssd": true, "node.labels.disk!=ssd": false, "node.labels.gpu!=yes": true, "node.labels.gpu==yes": false,
		"node.platform.arch==arm64": true, "node.platform.arch==amd64": false, "node.platform.arch!=x86_64": true,
		"node.platform.os==linux": true,
	} {
		c, err := parseConstraint(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.holds(m); got != want {
			t.Errorf("%s on m1: %v, want %v", s, got, want)
		}
	}
}

func names(ms []Machine) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestFit(t *testing.T) {
	const gib = int64(1) << 30
	cand := func(name string, l load, c Capacity) candidate {
		return candidate{Machine: Machine{ID: "id-" + name, Name: name}, load: l, capacity: c}
	}
	spec := func(ports ...string) runtime.ContainerSpec {
		return runtime.ContainerSpec{Service: "web", Image: "x", Ports: ports}
	}
	withMem := func(s runtime.ContainerSpec, r int64) runtime.ContainerSpec { s.ReserveMemory = r; return s }
	withCPU := func(s runtime.ContainerSpec, r float64) runtime.ContainerSpec { s.ReserveCPUs = r; return s }
	three := []candidate{cand("a", load{}, Capacity{}), cand("b", load{}, Capacity{}), cand("c", load{}, Capacity{})}
	for _, tc := range []struct {
		name    string
		cands   []candidate
		w       want
		n       int
		want    []string
		wantErr string
	}{
		{name: "no rules: spread", cands: three, w: want{service: "web", spec: spec()}, n: 4, want: []string{"a", "b", "c", "a"}},
		{name: "fills the emptiest first", cands: []candidate{cand("a", load{ofService: 2}, Capacity{}), cand("b", load{ofService: 1}, Capacity{}), cand("c", load{}, Capacity{})},
			w: want{service: "web", spec: spec()}, n: 3, want: []string{"c", "b", "c"}},
		{name: "one machine", cands: three[:1], w: want{service: "web", spec: spec()}, n: 3, want: []string{"a", "a", "a"}},
		{name: "nothing to place", cands: three, w: want{service: "web", spec: spec()}, n: 0, want: nil},
		{name: "no machines", cands: nil, w: want{service: "web", spec: spec()}, n: 1, wantErr: "fits on no machine"},
		{name: "SRV and ingress ports do not limit", cands: three,
			w: want{service: "web", spec: spec("8080", "a.example.com:8080/https")}, n: 4, want: []string{"a", "b", "c", "a"}},
		{name: "host port: one replica per machine", cands: three, w: want{service: "web", spec: spec("8081:8080")}, n: 3,
			want: []string{"a", "b", "c"}},
		{name: "host port: more replicas than machines refused, naming port and machine", cands: three,
			w: want{service: "web", spec: spec("8081:8080")}, n: 4,
			wantErr: "replica 4 of 4 of web fits on no machine: a: host port 8081/tcp is bound there by another replica of web"},
		{name: "host port picked by Docker does not limit", cands: three, w: want{service: "web", spec: spec("127.0.0.1::8080")}, n: 4,
			want: []string{"a", "b", "c", "a"}},
		{name: "host port of the service kept there", cands: []candidate{cand("a", load{ofService: 1}, Capacity{}), cand("b", load{}, Capacity{})},
			w: want{service: "web", spec: spec("8081:8080")}, n: 1, want: []string{"b"}},
		{name: "host port taken by another service",
			cands: []candidate{cand("a", load{ports: []portUse{{record.Binding{HostPort: 8081, Protocol: "tcp"}, "api"}}}, Capacity{}), cand("b", load{}, Capacity{})},
			w:     want{service: "web", spec: spec("127.0.0.1:8081:8080")}, n: 2,
			wantErr: "a: host port 127.0.0.1:8081/tcp is taken there by service api; b: host port 127.0.0.1:8081/tcp is bound there by another replica of web"},
		{name: "other protocol does not collide",
			cands: []candidate{cand("a", load{ports: []portUse{{record.Binding{HostPort: 8081, Protocol: "udp"}, "api"}}}, Capacity{})},
			w:     want{service: "web", spec: spec("8081:8080")}, n: 1, want: []string{"a"}},
		{name: "memory: fills what fits",
			cands: []candidate{cand("a", load{memory: 3 * gib}, Capacity{Memory: 4 * gib}), cand("b", load{}, Capacity{Memory: 4 * gib})},
			w:     want{service: "web", spec: withMem(spec(), gib)}, n: 5, want: []string{"a", "b", "b", "b", "b"}},
		{name: "memory: nothing fits, the reason said",
			cands: []candidate{cand("a", load{memory: 3 * gib}, Capacity{Memory: 4 * gib}), cand("b", load{}, Capacity{Memory: 2 * gib})},
			w:     want{service: "web", spec: withMem(spec(), 3*gib)}, n: 1,
			wantErr: "a: memory: 3GiB reserved, 1GiB of 4GiB free; b: memory: 3GiB reserved, 2GiB of 2GiB free"},
		{name: "memory unknown (older agent): not refused",
			cands: []candidate{cand("a", load{}, Capacity{})}, w: want{service: "web", spec: withMem(spec(), 64*gib)}, n: 1, want: []string{"a"}},
		{name: "CPUs",
			cands: []candidate{cand("a", load{cpus: 1.5}, Capacity{CPUs: 2}), cand("b", load{}, Capacity{CPUs: 1})},
			w:     want{service: "web", spec: withCPU(spec(), 1)}, n: 2,
			wantErr: "replica 2 of 2 of web fits on no machine: a: CPUs: 1 reserved, 0.5 of 2 free; b: CPUs: 1 reserved, 0 of 1 free"},
		{name: "constraint",
			cands: []candidate{cand("a", load{}, Capacity{}), {Machine: Machine{ID: "id-b", Name: "b", Labels: map[string]string{"disk": "ssd"}}}},
			w:     want{service: "web", spec: spec(), constraints: mustConstraints(t, "node.labels.disk==ssd")}, n: 2, want: []string{"b", "b"}},
		{name: "constraint that nothing meets",
			cands: three, w: want{service: "web", spec: spec(), constraints: mustConstraints(t, "node.role==ingress")}, n: 1,
			wantErr: "a: does not meet node.role==ingress; b: does not meet node.role==ingress; c: does not meet node.role==ingress"},
		{name: "volumes pin to their machines",
			cands: three, w: want{service: "web", spec: runtime.ContainerSpec{Service: "web", Image: "x", Volumes: []string{"data:/d"}},
				pinned: map[string]string{"id-b": "b"}}, n: 2, want: []string{"b", "b"}},
		{name: "volumes pinned, host port: no room",
			cands: three, w: want{service: "web", spec: runtime.ContainerSpec{Service: "web", Image: "x", Volumes: []string{"data:/d"}, Ports: []string{"80:80"}},
				pinned: map[string]string{"id-b": "b"}}, n: 2,
			wantErr: "a: does not hold the service's volumes data (they live on b)"},
	} {
		got, err := fit(tc.cands, tc.w, tc.n)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, api.ErrConflict) {
				t.Errorf("%s: %v %v, want error with %q", tc.name, names(got), err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(names(got), tc.want) {
			t.Errorf("%s: %v %v, want %v", tc.name, names(got), err, tc.want)
		}
	}
}

func mustConstraints(t *testing.T, s ...string) []constraint {
	t.Helper()
	cs, err := parseConstraints(s)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestPlacementRules runs services through the orchestrator: the rules see
// the state (other services' ports and reservations, volumes, labels).
func TestPlacementRules(t *testing.T) {
	ctx := context.Background()
	t.Run("host port collision refused before anything starts", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		_, err := r.o.RunService(ctx, api.RunRequest{Name: "web", Image: "echo", Replicas: 4, Ports: []string{"8081:8080"}}, nil)
		if err == nil || !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "host port 8081/tcp") {
			t.Fatalf("4 replicas on 3 machines with -p 8081:8080: %v", err)
		}
		if n := len(r.engine.ops("create")) + len(r.engine.ops("pull")); n != 0 || r.hasService(t, "web") {
			t.Errorf("a refused run still did something: %v, service recorded %v", r.engine.ops("create"), r.hasService(t, "web"))
		}
		r.run(t, api.RunRequest{Name: "web", Image: "echo", Replicas: 2, Ports: []string{"8081:8080"}, Machines: []string{"m1", "m2"}})
		// Another service wanting the port fits only on m3.
		r.run(t, api.RunRequest{Name: "api", Image: "echo", Ports: []string{"127.0.0.1:8081:9000"}})
		if got := r.placement(t, "api"); !slices.Equal(got, []string{"m3"}) {
			t.Errorf("api on %v, want m3 (m1 and m2 bind 8081 for web)", got)
		}
		if _, err := r.o.ScaleService(ctx, "web", api.ScaleRequest{Replicas: 3}, nil); err == nil || !strings.Contains(err.Error(), "m3: host port 8081/tcp is taken there by service api") {
			t.Errorf("scale web to 3: %v", err)
		}
	})
	t.Run("memory reservation that fits nowhere", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		r.engine.setCap("m1", Capacity{CPUs: 2, Memory: 1 << 30})
		r.engine.setCap("m2", Capacity{CPUs: 2, Memory: 1 << 30})
		r.engine.setCap("m3", Capacity{CPUs: 2, Memory: 512 << 20})
		r.run(t, api.RunRequest{Name: "db", Image: "pg", ReserveMemory: 768 << 20, Machines: []string{"m1"}})
		r.run(t, api.RunRequest{Name: "cache", Image: "redis", ReserveMemory: 512 << 20})
		if got := r.placement(t, "cache"); !slices.Equal(got, []string{"m2"}) {
			t.Errorf("cache on %v, want m2 (m1 has 256MiB left; ties go to the first)", got)
		}
		_, err := r.o.RunService(ctx, api.RunRequest{Name: "big", Image: "x", ReserveMemory: 800 << 20}, nil)
		want := "m1: memory: 800MiB reserved, 256MiB of 1GiB free; m2: memory: 800MiB reserved, 512MiB of 1GiB free; m3: memory: 800MiB reserved, 512MiB of 512MiB free"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("big: %v, want %q", err, want)
		}
	})
	t.Run("constraint on a label and the role", func(t *testing.T) {
		f := newFleet()
		f.ms[2].Labels = map[string]string{"disk": "ssd"}
		f.ms[1].Roles = []string{"ingress"}
		r := newRig(t, f, Config{})
		r.run(t, api.RunRequest{Name: "db", Image: "pg", Replicas: 2, Constraints: []string{"node.labels.disk==ssd"}})
		if got := r.placement(t, "db"); !slices.Equal(got, []string{"m3", "m3"}) {
			t.Errorf("db on %v, want m3 twice", got)
		}
		if _, err := r.o.ScaleService(ctx, "db", api.ScaleRequest{Replicas: 3}, nil); err != nil || !slices.Equal(r.placement(t, "db"), []string{"m3", "m3", "m3"}) {
			t.Errorf("scale keeps the constraint: %v %v", r.placement(t, "db"), err)
		}
		r.run(t, api.RunRequest{Name: "edge", Image: "x", Mode: "global", Constraints: []string{"node.role!=ingress"}})
		if got := r.placement(t, "edge"); !slices.Equal(got, []string{"m1", "m3"}) {
			t.Errorf("global edge on %v, want m1 and m3", got)
		}
		if _, err := r.o.RunService(ctx, api.RunRequest{Name: "x", Image: "x", Constraints: []string{"node.color==red"}}, nil); !errors.Is(err, api.ErrBadRequest) {
			t.Errorf("a bad constraint: %v", err)
		}
	})
	t.Run("named volume keeps the service on its machine", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		r.run(t, api.RunRequest{Name: "db", Image: "pg", Volumes: []string{"pgdata:/var/lib/postgresql"}, Machines: []string{"m2"}})
		if _, err := r.o.ScaleService(ctx, "db", api.ScaleRequest{Replicas: 2}, nil); err != nil {
			t.Fatal(err)
		}
		if got := r.placement(t, "db"); !slices.Equal(got, []string{"m2", "m2"}) {
			t.Errorf("db after scale on %v, want m2 twice", got)
		}
		// Down to none and up again: the record remembers where the volume is.
		if _, err := r.o.ScaleService(ctx, "db", api.ScaleRequest{Replicas: 0}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := r.o.ScaleService(ctx, "db", api.ScaleRequest{Replicas: 1}, nil); err != nil {
			t.Fatal(err)
		}
		if got := r.placement(t, "db"); !slices.Equal(got, []string{"m2"}) {
			t.Errorf("db after scale 0 and 1 on %v, want m2", got)
		}
		// A deploy that changes the image and adds a replica stays there too.
		if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "db", Image: "pg:2", Replicas: 2,
			Volumes: []string{"pgdata:/var/lib/postgresql"}}}}); err != nil {
			t.Fatal(err)
		}
		if got := r.placement(t, "db"); !slices.Equal(got, []string{"m2", "m2"}) {
			t.Errorf("db after deploy on %v, want m2 twice", got)
		}
		// Scaled to none, a deploy (which rewrites the record) still finds m2.
		if _, err := r.o.ScaleService(ctx, "db", api.ScaleRequest{Replicas: 0}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "db", Image: "pg:3", Replicas: 2,
			Volumes: []string{"pgdata:/var/lib/postgresql"}}}}); err != nil {
			t.Fatal(err)
		}
		if got := r.placement(t, "db"); !slices.Equal(got, []string{"m2", "m2"}) {
			t.Errorf("db after scale 0 and a deploy on %v, want m2 twice", got)
		}
		if svc, _ := r.o.service(ctx, "db"); svc == nil || !slices.Equal(svc.VolumeMachines, []string{"id-m2"}) {
			t.Errorf("the deploy's record lost where the volume lives: %+v", svc)
		}
		r.run(t, api.RunRequest{Name: "web", Image: "x", Replicas: 2, Volumes: []string{"cache:/c", "/srv:/srv", "tmpfs:/t"}})
		vs, err := r.o.Volumes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, v := range vs {
			got = append(got, fmt.Sprintf("%s@%s %s %v %d", v.Name, v.Machine, v.Driver, v.Services, v.Containers))
		}
		// web spreads to the machines without db's two containers first.
		want := []string{"cache@m1 local [web] 1", "cache@m3 local [web] 1", "pgdata@m2 local [db] 2"}
		if !slices.Equal(got, want) {
			t.Errorf("volumes %q, want %q", got, want)
		}
	})
	t.Run("deploy replaces a host-port container stop-first", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{Settle: 1, HealthPoll: 1})
		r.run(t, api.RunRequest{Name: "web", Image: "echo:1", Ports: []string{"8081:8080"}, Machines: []string{"m1"}})
		old := r.containers(t, "web")[0]
		if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{{Name: "web", Image: "echo:2", Ports: []string{"8081:8080"}}}}); err != nil {
			t.Fatal(err)
		}
		ops := strings.Join(append(r.engine.ops("act"), r.engine.ops("create")...), " | ")
		stop := r.engine.index(call{"act", "m1", "c1", "stop"})
		create := r.engine.index(call{Op: "create", Machine: "m1"}) // the first: web's run
		if stop < 0 || create < 0 {
			t.Fatalf("ops %s", ops)
		}
		if got := r.containers(t, "web"); len(got) != 1 || got[0] == old {
			t.Errorf("containers after deploy %v (old %s); ops %s", got, old, ops)
		}
		// The second create (the replacement) came after the stop.
		var creates []int
		r.engine.mu.Lock()
		for i, c := range r.engine.calls {
			if c.Op == "create" {
				creates = append(creates, i)
			}
		}
		r.engine.mu.Unlock()
		if len(creates) != 2 || creates[1] < stop {
			t.Errorf("replacement created at %v, old stopped at %d: not stop-first", creates, stop)
		}
	})
}

// TestSharedVolume: services that mount the same named volume (Compose's
// app and cron sharing html) go to the machine that holds it, whether
// the other service was placed by the same deploy or is already running.
func TestSharedVolume(t *testing.T) {
	r := newRig(t, newFleet(), Config{})
	// Planned in name order: app first, anywhere; cron must follow it.
	if _, err := deploy(r, api.DeployRequest{Services: []api.RunRequest{
		{Name: "cron", Image: "x", Volumes: []string{"p_html:/var/www"}, Project: "p"},
		{Name: "app", Image: "x", Volumes: []string{"p_html:/var/www"}, Project: "p"},
		{Name: "other", Image: "x", Volumes: []string{"p_db:/db"}, Project: "p"},
	}}); err != nil {
		t.Fatal(err)
	}
	app, cron := r.placement(t, "app.p"), r.placement(t, "cron.p")
	if len(app) != 1 || !slices.Equal(app, cron) {
		t.Errorf("app on %v, cron on %v: they share html, want one machine", app, cron)
	}
	// A later service with the volume joins them, even as a plain run.
	r.run(t, api.RunRequest{Name: "backup", Image: "x", Volumes: []string{"p_html:/backup:ro"}})
	if got := r.placement(t, "backup"); !slices.Equal(got, app) {
		t.Errorf("backup on %v, want %v with html", got, app)
	}
}
