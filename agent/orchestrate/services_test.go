package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

func TestRunService(t *testing.T) {
	down := errors.New("Docker is not available on m2: connection refused")
	for _, tc := range []struct {
		name     string
		extra    []string         // machines beyond m1 (self), m2, m3
		fail     map[string]error // engine failures, "op machine"
		req      api.RunRequest
		want     []string // machines of the containers, sorted
		failed   int      // containers that failed
		wantErr  error
		errText  string
		recorded bool // the service record is there afterwards
	}{
		{name: "replicated spreads over live machines", extra: []string{"m4:down"},
			req:  api.RunRequest{Name: "web", Image: "nginx", Replicas: 4},
			want: []string{"m1", "m1", "m2", "m3"}, recorded: true},
		{name: "default replicas is one, name from the image",
			req:  api.RunRequest{Image: "registry.example/team/My_App:1.2"},
			want: []string{"m1"}, recorded: true},
		{name: "global: one per machine that can run containers", extra: []string{"m4:netstack", "m5:down"},
			req:  api.RunRequest{Name: "agent", Image: "busybox", Mode: "global", Replicas: 7},
			want: []string{"m1", "m2", "m3"}, recorded: true},
		{name: "netstack machines are skipped", extra: []string{"m4:netstack"},
			req:  api.RunRequest{Name: "web", Image: "nginx", Replicas: 6},
			want: []string{"m1", "m1", "m2", "m2", "m3", "m3"}, recorded: true},
		{name: "a machine whose Docker is down is skipped", fail: map[string]error{"ready m2": down},
			req:  api.RunRequest{Name: "web", Image: "nginx", Replicas: 2},
			want: []string{"m1", "m3"}, recorded: true},
		{name: "named machines", extra: []string{"m4"},
			req:  api.RunRequest{Name: "web", Image: "nginx", Replicas: 3, Machines: []string{"m3", "id-m4", "m3"}},
			want: []string{"m3", "m3", "m4"}, recorded: true},
		{name: "named machine that cannot run says so", extra: []string{"m5:down"},
			req:    api.RunRequest{Name: "web", Image: "nginx", Machines: []string{"m5"}},
			failed: 1},
		{name: "unknown machine",
			req:     api.RunRequest{Name: "web", Image: "nginx", Machines: []string{"m1", "mx"}},
			wantErr: api.ErrBadRequest, errText: `unknown machine "mx" (machines: m1, m2, m3)`},
		{name: "no machine can run containers",
			fail:    map[string]error{"ready m1": down, "ready m2": down, "ready m3": down},
			req:     api.RunRequest{Name: "web", Image: "nginx"},
			wantErr: api.ErrUnavailable, errText: "no machine can run containers now: " + down.Error()},
		{name: "bad mode",
			req:     api.RunRequest{Name: "web", Image: "nginx", Mode: "bogus"},
			wantErr: api.ErrBadRequest, errText: `mode "bogus" is not replicated or global`},
		{name: "replicas out of range",
			req:     api.RunRequest{Name: "web", Image: "nginx", Replicas: 1001},
			wantErr: api.ErrBadRequest, errText: "replicas 1001 is outside 1..1000"},
		{name: "bad spec", req: api.RunRequest{Name: "web", Image: "nginx", Env: []string{"novalue"}},
			wantErr: api.ErrBadRequest, errText: `environment "novalue" is not KEY=VALUE`},
		{name: "all failed leaves no service record",
			fail: map[string]error{"create m1": down, "create m2": down, "create m3": down},
			req:  api.RunRequest{Name: "web", Image: "nginx", Replicas: 3}, failed: 3},
		{name: "some failed keeps the service",
			fail: map[string]error{"create m2": down},
			req:  api.RunRequest{Name: "web", Image: "nginx", Replicas: 3},
			want: []string{"m1", "m3"}, failed: 1, recorded: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, newFleet(tc.extra...), Config{})
			for k, err := range tc.fail {
				r.engine.setFail(k, err)
			}
			var progress []api.ContainerResult
			res, err := r.o.RunService(context.Background(), tc.req, func(e api.RunEvent) {
				if e.Container != nil {
					progress = append(progress, *e.Container)
				}
			})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %v, want %v with %q", err, tc.wantErr, tc.errText)
				}
				if len(r.engine.ops("create")) > 0 {
					t.Errorf("creates after an error: %v", r.engine.ops("create"))
				}
			} else if err != nil {
				t.Fatal(err)
			}
			name := tc.req.Name
			if name == "" {
				name = res.Service
			}
			if got := r.placement(t, name); !slices.Equal(got, tc.want) {
				t.Errorf("containers on %v, want %v", got, tc.want)
			}
			if res.Failed() != tc.failed {
				t.Errorf("failed = %d, want %d: %+v", res.Failed(), tc.failed, res.Containers)
			}
			if len(progress) != len(res.Containers) {
				t.Errorf("progress got %d results, the answer has %d", len(progress), len(res.Containers))
			}
			if got := r.hasService(t, name); got != tc.recorded {
				t.Errorf("service record there = %v, want %v", got, tc.recorded)
			}
		})
	}
}

func TestRunServiceNameFromImage(t *testing.T) {
	r := newRig(t, newFleet(), Config{})
	res := r.run(t, api.RunRequest{Image: "registry.example/team/My_App:1.2"})
	if res.Service != "my-app" {
		t.Errorf("service = %q, want my-app", res.Service)
	}
}

func TestRunServiceExists(t *testing.T) {
	r := newRig(t, newFleet(), Config{})
	r.run(t, api.RunRequest{Name: "web", Image: "nginx"})
	_, err := r.o.RunService(context.Background(), api.RunRequest{Name: "web", Image: "nginx"}, nil)
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), `service "web" exists`) {
		t.Fatalf("second run: %v", err)
	}
	// Leftover containers without a service record block a run too.
	if err := r.store.Delete(context.Background(), record.ServicesPrefix+"web"); err != nil {
		t.Fatal(err)
	}
	_, err = r.o.RunService(context.Background(), api.RunRequest{Name: "web", Image: "nginx"}, nil)
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), `service "web" still has 1 containers`) {
		t.Fatalf("run over leftovers: %v", err)
	}
}

func TestScaleService(t *testing.T) {
	ctx := context.Background()
	t.Run("up spreads over the emptiest machines", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		r.run(t, api.RunRequest{Name: "web", Image: "nginx", Replicas: 2, Machines: []string{"m1", "m2"}})
		res, err := r.o.ScaleService(ctx, "web", api.ScaleRequest{Replicas: 5}, nil)
		if err != nil || res.Failed() > 0 {
			t.Fatalf("scale: %v %+v", err, res)
		}
		if got, want := r.placement(t, "web"), []string{"m1", "m1", "m2", "m2", "m3"}; !slices.Equal(got, want) {
			t.Errorf("containers on %v, want %v", got, want)
		}
	})
	t.Run("down removes stopped ones, then from the fullest machine", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		r.run(t, api.RunRequest{Name: "web", Image: "nginx", Replicas: 5}) // on m1 m2 m3 m1 m2
		cs, err := r.o.serviceContainers(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		// Stop the one on m3; the first by name of the others goes next,
		// as m1 and m2 have two each.
		var stopped string
		var rest []string
		for _, c := range cs {
			if c.MachineID == "id-m3" {
				stopped = c.Name
				if err := r.engine.Act(ctx, Machine{ID: "id-m3", Name: "m3"}, c.ID, "stop"); err != nil {
					t.Fatal(err)
				}
			} else {
				rest = append(rest, c.Name)
			}
		}
		slices.Sort(rest)
		res, err := r.o.ScaleService(ctx, "web", api.ScaleRequest{Replicas: 3}, nil)
		if err != nil || res.Failed() > 0 {
			t.Fatalf("scale: %v %+v", err, res)
		}
		if got, want := r.containers(t, "web"), rest[1:]; !slices.Equal(got, want) {
			t.Errorf("left %v, want %v (%s stopped)", got, want, stopped)
		}
		if got := r.placement(t, "web"); !slices.Equal(got, []string{"m1", "m2", "m2"}) && !slices.Equal(got, []string{"m1", "m1", "m2"}) {
			t.Errorf("left on %v, want one machine with two, the other with one", got)
		}
		for _, c := range res.Containers {
			if c.Action != "removed" {
				t.Errorf("result %+v, want removed", c)
			}
		}
	})
	t.Run("a scale right after a scale counts what is left", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		r.run(t, api.RunRequest{Name: "web", Image: "nginx", Replicas: 4})
		r.engine.removeLag = 300 * time.Millisecond
		if res, err := r.o.ScaleService(ctx, "web", api.ScaleRequest{Replicas: 0}, nil); err != nil || res.Failed() > 0 {
			t.Fatalf("scale to 0: %v %+v", err, res)
		}
		res, err := r.o.ScaleService(ctx, "web", api.ScaleRequest{Replicas: 1}, nil)
		if err != nil || res.Failed() > 0 {
			t.Fatalf("scale to 1 after 0: %v %+v", err, res)
		}
		if got := r.containers(t, "web"); len(got) != 1 {
			t.Errorf("web has %v after scale 0 then 1, want one container", got)
		}
	})
	t.Run("down never counts on unreachable machines", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		r.run(t, api.RunRequest{Name: "web", Image: "nginx", Replicas: 3})
		r.fleet.set("m2", "down")
		r.fleet.set("m3", "down")
		res, err := r.o.ScaleService(ctx, "web", api.ScaleRequest{Replicas: 0}, nil)
		if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "only 1 of 3 containers to remove are on reachable machines") {
			t.Fatalf("scale to 0: %v", err)
		}
		if len(res.Containers) != 1 || res.Containers[0].Machine != "m1" {
			t.Errorf("removed %+v, want the one on m1", res.Containers)
		}
		if got, want := r.placement(t, "web"), []string{"m2", "m3"}; !slices.Equal(got, want) {
			t.Errorf("left on %v, want %v", got, want)
		}
	})
	t.Run("same size does nothing", func(t *testing.T) {
		r := newRig(t, newFleet(), Config{})
		r.run(t, api.RunRequest{Name: "web", Image: "nginx", Replicas: 2})
		calls := len(r.engine.calls)
		if _, err := r.o.ScaleService(ctx, "web", api.ScaleRequest{Replicas: 2}, nil); err != nil {
			t.Fatal(err)
		}
		if len(r.engine.calls) != calls {
			t.Errorf("engine calls %v", r.engine.calls[calls:])
		}
	})
	for _, tc := range []struct {
		name     string
		service  string
		replicas int
		wantErr  error
		errText  string
	}{
		{"global refused", "agent", 3, api.ErrBadRequest, `service "agent" is global (one container per machine): it cannot be scaled`},
		{"unknown service", "nope", 3, api.ErrNotFound, `no service "nope"`},
		{"out of range", "web", 1001, api.ErrBadRequest, "replicas 1001 is outside 0..1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, newFleet(), Config{})
			r.run(t, api.RunRequest{Name: "agent", Image: "busybox", Mode: "global"})
			r.run(t, api.RunRequest{Name: "web", Image: "nginx"})
			before := r.engine.ops("create")
			_, err := r.o.ScaleService(ctx, tc.service, api.ScaleRequest{Replicas: tc.replicas}, nil)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("err = %v, want %v with %q", err, tc.wantErr, tc.errText)
			}
			if got := r.engine.ops("create"); len(got) != len(before) {
				t.Errorf("creates: %v", got[len(before):])
			}
		})
	}
}

func TestRemoveStopStart(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, newFleet(), Config{})
	r.run(t, api.RunRequest{Name: "web", Image: "nginx", Replicas: 3})
	res, err := r.o.StopService(ctx, "web")
	if err != nil || res.Failed() > 0 || len(res.Containers) != 3 {
		t.Fatalf("stop: %v %+v", err, res)
	}
	svcs, err := r.o.Services(ctx)
	if err != nil || len(svcs) != 1 || svcs[0].Running != 0 || svcs[0].Total != 3 || svcs[0].Image != "nginx" {
		t.Fatalf("services after stop: %v %+v", err, svcs)
	}
	if _, err := r.o.StartService(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	det, err := r.o.InspectService(ctx, "web")
	if err != nil || det.Running != 3 || len(det.Containers) != 3 || det.Mode != "replicated" {
		t.Fatalf("inspect after start: %v %+v", err, det)
	}
	r.fleet.set("m3", "down")
	cs, err := r.o.Containers(ctx)
	if err != nil || len(cs) != 3 || cs[2].Machine != "m3" || cs[2].MachineState != "unreachable" {
		t.Fatalf("ps: %v %+v", err, cs)
	}
	res, err = r.o.RemoveService(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Containers {
		if (c.Machine == "m3") != strings.Contains(c.Error, "machine m3 is down or unreachable from this machine") {
			t.Errorf("rm with m3 down: %+v", c)
		}
	}
	if res.Failed() != 1 {
		t.Errorf("rm with m3 down: %+v", res.Containers)
	}
	if r.hasService(t, "web") {
		t.Error("service record left after rm")
	}
	if got, want := r.placement(t, "web"), []string{"m3"}; !slices.Equal(got, want) {
		t.Errorf("left on %v, want %v", got, want)
	}
	if _, err := r.o.StopService(ctx, "nope"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("stop of an unknown service: %v", err)
	}
}

func TestExecAndLogs(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, newFleet(), Config{})
	r.run(t, api.RunRequest{Name: "web", Image: "nginx", Replicas: 2, Machines: []string{"m2", "m1"}})
	res, err := r.o.ExecService(ctx, "web", api.ExecRequest{Cmd: []string{"true"}})
	if err != nil || res.Machine != "m1" {
		t.Fatalf("exec picks this machine's container: %v %+v", err, res)
	}
	if _, err := r.o.ExecService(ctx, "web", api.ExecRequest{}); !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("exec without a command: %v", err)
	}
	if _, err := r.o.ExecService(ctx, "web", api.ExecRequest{Cmd: []string{"true"}, Container: "nope"}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("exec in an unknown container: %v", err)
	}
	r.fleet.set("m2", "down")
	var lines []string
	err = r.o.ServiceLogs(ctx, "web", api.LogsRequest{}, func(l api.LogLine) error {
		lines = append(lines, l.Machine+": "+l.Text)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(lines)
	if len(lines) != 2 || lines[0] != "m1: hello from m1" || !strings.Contains(lines[1], "m2: uncloud: logs of web-") ||
		!strings.Contains(lines[1], "machine m2 is down or unreachable") {
		t.Errorf("logs: %q", lines)
	}
}

func TestPushImage(t *testing.T) {
	r := newRig(t, newFleet("m4:netstack", "m5:down"), Config{})
	got := map[string]api.ImageProgress{}
	err := r.o.PushImage(context.Background(), api.PushRequest{Image: "app:1", Method: api.PushLoad}, func(p api.ImageProgress) error {
		if p.Status != "sending" {
			got[p.Machine] = p
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The fake has every image already (same ID), so nothing is sent.
	if len(got) != 2 || got["m2"].Status != "present" || got["m3"].Status != "present" {
		t.Errorf("push: %+v", got)
	}
	// m2 lacks it and gets it; m3 lacks it and cannot load it; m5 is down.
	r.engine.lacks["m2"], r.engine.lacks["m3"] = true, true
	r.engine.setFail("load m3", errors.New("machine m3: load refused"))
	got = map[string]api.ImageProgress{}
	err = r.o.PushImage(context.Background(), api.PushRequest{Image: "app:1", Machines: []string{"m2", "m3", "m5"}, Method: api.PushLoad}, func(p api.ImageProgress) error {
		if p.Status != "sending" {
			got[p.Machine] = p
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := got["m2"]; p.Status != "done" || p.Bytes != int64(len("tarball of app:1")) {
		t.Errorf("m2: %+v", p)
	}
	if p := got["m3"]; p.Status != "failed" || p.Error != "machine m3: load refused" {
		t.Errorf("m3: %+v", p)
	}
	if p := got["m5"]; p.Status != "failed" || !strings.Contains(p.Error, "machine m5 is down or unreachable") {
		t.Errorf("m5: %+v", p)
	}
	if saves := r.engine.ops("save"); len(saves) != 2 || saves[0] != "save m1 app:1" {
		t.Errorf("saves %v, want two on m1 (one per machine that lacks the image)", saves)
	}
	// m2's app:1 is another image: refused unless forced, nothing sent.
	r.engine.lacks["m2"], r.engine.differs["m2"] = false, true
	for _, force := range []bool{false, true} {
		got = map[string]api.ImageProgress{}
		err = r.o.PushImage(context.Background(), api.PushRequest{Image: "app:1", Machines: []string{"m2"}, Force: force, Method: api.PushLoad}, func(p api.ImageProgress) error {
			if p.Status != "sending" {
				got[p.Machine] = p
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		p := got["m2"]
		if !force && (p.Status != "failed" || !strings.Contains(p.Error, "app:1 on m2 is another image") || !strings.Contains(p.Error, "--force")) {
			t.Errorf("push over another image's tag: %+v, want a refusal naming --force", p)
		}
		if force && p.Status != "done" {
			t.Errorf("forced push over another image's tag: %+v, want done", p)
		}
	}
	if loads := r.engine.ops("load"); len(loads) != 3 || loads[2] != "load m2" {
		t.Errorf("loads %v, want the two before and the forced one to m2", loads)
	}
	r.engine.setFail("imageid m1", fmt.Errorf("%w: \"app:2\" is not in Docker on m1", runtime.ErrImageNotFound))
	err = r.o.PushImage(context.Background(), api.PushRequest{Image: "app:2", Machines: []string{"m5"}}, func(api.ImageProgress) error { return nil })
	if !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), "is not in Docker on m1") {
		t.Fatalf("push of an image this machine lacks: %v", err)
	}
}
