package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt/crdttest"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// imageFake is fakeEngine plus each machine's images, kept as a real
// machine would: rm refuses a used image unless forced, prune keeps
// used ones.
type imageFake struct {
	*fakeEngine
	mu     sync.Mutex
	images map[string][]runtime.Image // by machine name
	fails  map[string]error           // "op machine"
	log    []string
}

func (f *imageFake) note(op string, m Machine) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, op+" "+m.Name)
	return f.fails[op+" "+m.Name]
}

func (f *imageFake) ListImages(_ context.Context, m Machine) (runtime.ImageList, error) {
	if err := f.note("ls", m); err != nil {
		return runtime.ImageList{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return runtime.ImageList{Images: slices.Clone(f.images[m.Name])}, nil
}

func (f *imageFake) RemoveImage(_ context.Context, m Machine, ref string, opts runtime.RemoveImageOptions) (runtime.ImageRemoval, error) {
	op := "rm"
	if opts.Check {
		op = "check"
	}
	if err := f.note(op, m); err != nil {
		return runtime.ImageRemoval{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, img := range f.images[m.Name] {
		if img.ID != ref && !slices.Contains(img.Tags, ref) {
			continue
		}
		if img.InUse > 0 && !opts.Force {
			return runtime.ImageRemoval{}, fmt.Errorf("%w: %s is used on %s by service %s", runtime.ErrImageInUse, ref, m.Name, img.Users[0].Service)
		}
		if !opts.Check {
			f.images[m.Name] = slices.Delete(f.images[m.Name], i, i+1)
		}
		return runtime.ImageRemoval{ID: img.ID, Deleted: []string{img.ID}}, nil
	}
	return runtime.ImageRemoval{}, fmt.Errorf("%w: %q is not in Docker on %s", runtime.ErrImageNotFound, ref, m.Name)
}

func (f *imageFake) PruneImages(_ context.Context, m Machine, opts runtime.PruneOptions) (runtime.PruneReport, error) {
	if err := f.note("prune", m); err != nil {
		return runtime.PruneReport{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	rep := runtime.PruneReport{DryRun: opts.DryRun}
	var kept []runtime.Image
	for _, img := range f.images[m.Name] {
		if img.Used() || (!opts.All && !img.Dangling()) {
			kept = append(kept, img)
			continue
		}
		rep.Removed, rep.Count, rep.Reclaimed = append(rep.Removed, img), rep.Count+1, rep.Reclaimed+img.Size
	}
	if !opts.DryRun {
		f.images[m.Name] = kept
	}
	return rep, nil
}

func (f *imageFake) has(machine, id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.ContainsFunc(f.images[machine], func(i runtime.Image) bool { return i.ID == id })
}

func (f *imageFake) ops(op string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.log {
		if strings.HasPrefix(l, op+" ") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

var (
	webImg    = runtime.Image{ID: "sha256:web", Tags: []string{"web:1"}, Size: 100, InUse: 1, Users: []runtime.ImageUser{{Service: "web", Container: "web-1", State: "running"}}}
	oldImg    = runtime.Image{ID: "sha256:old", Tags: []string{"web:0"}, Size: 50}
	danglyImg = runtime.Image{ID: "sha256:dangly", Size: 20}
)

// imageRig is m1 (self), m2, m3 alive, m4 netstack, m5 down: m1 runs
// web from web:1 and has web:0 unused and a dangling image; m2 has
// web:1 unused; m3 has nothing.
func imageRig(t *testing.T) (*Orchestrator, *imageFake) {
	t.Helper()
	store := crdttest.Open(t, "m1")
	f := &imageFake{fakeEngine: newEngine(store), fails: map[string]error{}, images: map[string][]runtime.Image{
		"m1": {webImg, oldImg, danglyImg},
		"m2": {{ID: "sha256:web", Tags: []string{"web:1"}, Size: 100}},
	}}
	o := New(Config{Fleet: newFleet("m4:netstack", "m5:down"), Records: store, Engine: f})
	return o, f
}

func states(ms []api.ImageMachine) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Machine+"="+m.State)
	}
	return strings.Join(out, " ")
}

func TestListImages(t *testing.T) {
	ctx := context.Background()
	o, f := imageRig(t)
	f.fails["ls m3"] = fmt.Errorf("Docker is not available on m3")
	res, err := o.ListImages(ctx, api.ImageListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := states(res.Machines), "m1=ok m2=ok m3=failed m5=unreachable"; got != want {
		t.Errorf("machines %s, want %s (netstack m4 left out, down m5 named)", got, want)
	}
	var rows []string
	for _, i := range res.Images {
		rows = append(rows, fmt.Sprintf("%s@%s:%s", strings.Join(i.Tags, ","), i.Machine, strings.Join(i.Services, ",")))
	}
	// One image's machines are next to each other; unnamed images last.
	if got, want := strings.Join(rows, " "), "web:0@m1: web:1@m1:web web:1@m2: @m1:"; got != want {
		t.Errorf("rows %s, want %s", got, want)
	}
	if ops := f.ops("ls"); strings.Join(ops, ",") != "ls m1,ls m2,ls m3" {
		t.Errorf("asked %v: a down machine is not called", ops)
	}

	res, err = o.ListImages(ctx, api.ImageListRequest{Machines: []string{"m2", "m4"}})
	if err != nil || states(res.Machines) != "m2=ok m4=ok" || len(res.Images) != 1 {
		t.Errorf("ls -m m2,m4 = %+v, %v", res, err)
	}
	if _, err := o.ListImages(ctx, api.ImageListRequest{Machines: []string{"nope"}}); !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("ls -m nope: %v, want a bad request", err)
	}
}

func TestRemoveImage(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		req      api.ImageRemoveRequest
		wantErr  error
		errHas   string
		states   string // machine=state, sorted
		gone     []string
		kept     []string
		removals []string
	}{
		{name: "used on one machine: refused everywhere, nothing removed",
			req: api.ImageRemoveRequest{Image: "web:1"}, wantErr: api.ErrConflict, errHas: "service web",
			kept: []string{"m1/sha256:web", "m2/sha256:web"}},
		{name: "forced: removed where it is, absent elsewhere",
			req: api.ImageRemoveRequest{Image: "web:1", Force: true}, states: "m1=removed m2=removed m3=absent m5=unreachable",
			gone: []string{"m1/sha256:web", "m2/sha256:web"}, removals: []string{"rm m1", "rm m2"}},
		{name: "only the named machine",
			req: api.ImageRemoveRequest{Image: "web:1", Machines: []string{"m2"}}, states: "m2=removed",
			gone: []string{"m2/sha256:web"}, kept: []string{"m1/sha256:web"}, removals: []string{"rm m2"}},
		{name: "unused image by ID",
			req: api.ImageRemoveRequest{Image: "sha256:old"}, states: "m1=removed m2=absent m3=absent m5=unreachable",
			gone: []string{"m1/sha256:old"}, removals: []string{"rm m1"}},
		{name: "on no machine", req: api.ImageRemoveRequest{Image: "nope:1", Machines: []string{"m2", "m3"}},
			wantErr: api.ErrNotFound, errHas: "m2, m3"},
		{name: "no image", req: api.ImageRemoveRequest{Image: " "}, wantErr: api.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, f := imageRig(t)
			res, err := o.RemoveImage(ctx, tt.req)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want %v containing %q", err, tt.wantErr, tt.errHas)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			var ms []api.ImageMachine
			for _, m := range res.Machines {
				ms = append(ms, m.ImageMachine)
			}
			if tt.wantErr == nil && states(ms) != tt.states {
				t.Errorf("states %s, want %s", states(ms), tt.states)
			}
			for _, g := range tt.gone {
				m, id, _ := strings.Cut(g, "/")
				if f.has(m, id) {
					t.Errorf("%s still has %s", m, id)
				}
			}
			for _, k := range tt.kept {
				m, id, _ := strings.Cut(k, "/")
				if !f.has(m, id) {
					t.Errorf("%s lost %s", m, id)
				}
			}
			if got := f.ops("rm"); !slices.Equal(got, tt.removals) {
				t.Errorf("removals %v, want %v", got, tt.removals)
			}
		})
	}
}

func TestPruneImages(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name            string
		req             api.ImagePruneRequest
		m1Count         int
		m1Reclaimed     int64
		m1Keeps, m1Lost []string
	}{
		{"dry run removes nothing", api.ImagePruneRequest{All: true, DryRun: true}, 2, 70,
			[]string{"sha256:web", "sha256:old", "sha256:dangly"}, nil},
		{"default: dangling only", api.ImagePruneRequest{}, 1, 20,
			[]string{"sha256:web", "sha256:old"}, []string{"sha256:dangly"}},
		{"all: every unused image, never a used one", api.ImagePruneRequest{All: true}, 2, 70,
			[]string{"sha256:web"}, []string{"sha256:old", "sha256:dangly"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, f := imageRig(t)
			res, err := o.PruneImages(ctx, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			var ms []api.ImageMachine
			for _, m := range res.Machines {
				ms = append(ms, m.ImageMachine)
			}
			if got := states(ms); got != "m1=ok m2=ok m3=ok m5=unreachable" {
				t.Errorf("states %s", got)
			}
			if m1 := res.Machines[0]; m1.Count != tt.m1Count || m1.Reclaimed != tt.m1Reclaimed || res.DryRun != tt.req.DryRun {
				t.Errorf("m1 report %+v", m1)
			}
			for _, id := range tt.m1Keeps {
				if !f.has("m1", id) {
					t.Errorf("m1 lost %s", id)
				}
			}
			for _, id := range tt.m1Lost {
				if f.has("m1", id) {
					t.Errorf("m1 kept %s", id)
				}
			}
		})
	}
}

// TestImageCommandsWithoutImageEngine: an engine that cannot reach
// images is said, not a panic.
func TestImageCommandsWithoutImageEngine(t *testing.T) {
	store := crdttest.Open(t, "m1")
	o := New(Config{Fleet: newFleet(), Records: store, Engine: newEngine(store)})
	if _, err := o.ListImages(context.Background(), api.ImageListRequest{}); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("ls without an image engine: %v", err)
	}
}
