package orchestrate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/crdt/crdttest"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// fakeFleet is a network of machines whose states a test sets.
type fakeFleet struct {
	mu sync.Mutex
	ms []Machine
}

func (f *fakeFleet) Machines(context.Context) ([]Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ms), nil
}

// set changes one machine's state.
func (f *fakeFleet) set(name, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.ms {
		if f.ms[i].Name == name {
			f.ms[i].State = state
		}
	}
}

// newFleet is m1 (self) and m2, m3 (alive), all kernel mode, plus what
// the test adds ("m4:netstack", "m5:down").
func newFleet(extra ...string) *fakeFleet {
	f := &fakeFleet{ms: []Machine{
		{ID: "id-m1", Name: "m1", State: "self", Mode: "kernel"},
		{ID: "id-m2", Name: "m2", State: "alive", Mode: "kernel"},
		{ID: "id-m3", Name: "m3", State: "alive", Mode: "kernel"},
	}}
	for _, e := range extra {
		name, how, _ := strings.Cut(e, ":")
		m := Machine{ID: "id-" + name, Name: name, State: "alive", Mode: "kernel"}
		switch how {
		case "netstack":
			m.Mode = "netstack"
		case "down":
			m.State, m.Mode = "down", ""
		}
		f.ms = append(f.ms, m)
	}
	return f
}

// call is one call the engine got.
type call struct {
	Op, Machine, ID, Action string
}

func (c call) String() string {
	return strings.TrimSpace(fmt.Sprintf("%s %s %s %s", c.Op, c.Machine, c.ID, c.Action))
}

// fakeEngine is every machine's Docker: it records calls, writes the
// container records as each machine does, and fails on demand.
type fakeEngine struct {
	store Records

	mu    sync.Mutex
	seq   int
	calls []call
	// fail makes an op fail on a machine: key "op machine" (e.g.
	// "create m2"), value the error.
	fail map[string]error
	// started gives the state and health of a new container on a machine
	// (by name); running and healthy when absent.
	started map[string][2]string
	live    map[string]*record.Container // by container ID
	lacks   map[string]bool              // machines without any image
	differs map[string]bool              // machines whose tags name other images
	// tags is the registry: image reference -> manifest digest; an image
	// not in it resolves to "sha256:<ref>".
	tags map[string]string
	// pins are the pins containers were made with, by container ID.
	pins map[string]string
	// logOpts are the options of each Logs call.
	logOpts []runtime.LogOptions
	// caps are what each machine's Docker reports (by name); zeros when absent.
	caps map[string]Capacity
	// specs are the specs containers were made with, by container ID.
	specs map[string]runtime.ContainerSpec
	// removeLag delays a removed container's record leaving the state,
	// as gossip does when another machine removed it.
	removeLag time.Duration
	// drainedAtRemove says, by container ID, whether the record said
	// draining when the container was removed.
	drainedAtRemove map[string]bool
}

func newEngine(store Records) *fakeEngine {
	return &fakeEngine{store: store, fail: map[string]error{}, started: map[string][2]string{},
		live: map[string]*record.Container{}, lacks: map[string]bool{}, differs: map[string]bool{},
		tags: map[string]string{}, pins: map[string]string{}}
}

func (e *fakeEngine) record(op string, m Machine, id, action string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, call{op, m.Name, id, action})
	if err := e.fail[op+" "+m.Name]; err != nil {
		return err
	}
	return nil
}

// ops are the calls of one kind, as strings.
func (e *fakeEngine) ops(op string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, c := range e.calls {
		if c.Op == op {
			out = append(out, c.String())
		}
	}
	return out
}

// forget clears the call log, so a test sees only what comes next.
func (e *fakeEngine) forget() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = nil
}

// index is where a call is in the log, or -1.
func (e *fakeEngine) index(c call) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Index(e.calls, c)
}

func (e *fakeEngine) setFail(key string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		delete(e.fail, key)
	} else {
		e.fail[key] = err
	}
}

func (e *fakeEngine) Ready(_ context.Context, m Machine) error {
	return e.record("ready", m, "", "")
}

func (e *fakeEngine) Create(ctx context.Context, m Machine, spec runtime.ContainerSpec) (*record.Container, error) {
	if err := e.record("create", m, "", ""); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.seq++
	n := e.seq
	st := e.started[m.Name]
	e.mu.Unlock()
	if st[0] == "" {
		st = [2]string{"running", "healthy"}
	}
	c := &record.Container{MachineID: m.ID, ID: fmt.Sprintf("c%d", n), Name: fmt.Sprintf("%s-%d", spec.Service, n),
		Service: spec.Service, Image: spec.Image, ImageDigest: spec.PinDigest(), Address: fmt.Sprintf("10.210.0.%d", n),
		State: st[0], Health: st[1]}
	e.mu.Lock()
	e.pins[c.ID] = spec.ImagePin
	if e.specs == nil {
		e.specs = map[string]runtime.ContainerSpec{}
	}
	e.specs[c.ID] = spec
	e.mu.Unlock()
	if err := e.store.Put(ctx, c.Key(), c); err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.live[c.ID] = c
	e.mu.Unlock()
	return c, nil
}

func (e *fakeEngine) Act(ctx context.Context, m Machine, id, action string) error {
	if err := e.record("act", m, id, action); err != nil {
		return err
	}
	key := record.ContainersPrefix + m.ID + "/" + id
	r, err := e.store.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("no container %s on %s: %w", id, m.Name, err)
	}
	c := r.(*record.Container)
	switch action {
	case "remove":
		e.mu.Lock()
		if e.drainedAtRemove == nil {
			e.drainedAtRemove = map[string]bool{}
		}
		e.drainedAtRemove[id] = c.Draining
		delete(e.live, id)
		lag := e.removeLag
		e.mu.Unlock()
		if lag > 0 {
			// Another machine's removal reaches this state later.
			time.AfterFunc(lag, func() { e.store.Delete(context.Background(), key) })
			return nil
		}
		return e.store.Delete(ctx, key)
	case "drain":
		e.mu.Lock()
		err := e.fail["drain "+m.Name] // an agent of the release before drain
		e.mu.Unlock()
		if err != nil {
			return err
		}
		c.Draining = true
	case "stop":
		c.State = "exited"
	case "start":
		c.State = "running"
	default:
		return fmt.Errorf("%w: unknown container action %q", runtime.ErrBadSpec, action)
	}
	return e.store.Put(ctx, key, c)
}

func (e *fakeEngine) Inspect(_ context.Context, m Machine, id string) (*record.Container, error) {
	if err := e.record("inspect", m, id, ""); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.live[id]
	if !ok {
		return nil, fmt.Errorf("%w: no container %s", runtime.ErrNotFound, id)
	}
	cp := *c
	return &cp, nil
}

func (e *fakeEngine) Exec(_ context.Context, m Machine, id string, cmd []string) (runtime.ExecResult, error) {
	if err := e.record("exec", m, id, strings.Join(cmd, " ")); err != nil {
		return runtime.ExecResult{}, err
	}
	return runtime.ExecResult{Stdout: "ran on " + m.Name}, nil
}

func (e *fakeEngine) Logs(_ context.Context, m Machine, id string, o runtime.LogOptions, line func(string) error) error {
	if err := e.record("logs", m, id, ""); err != nil {
		return err
	}
	e.mu.Lock()
	e.logOpts = append(e.logOpts, o)
	e.mu.Unlock()
	return line(time.Now().UTC().Format(time.RFC3339Nano) + " hello from " + m.Name)
}

func (e *fakeEngine) ImageID(_ context.Context, m Machine, ref string) (string, error) {
	if err := e.record("imageid", m, ref, ""); err != nil {
		return "", err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lacks[m.Name] {
		return "", fmt.Errorf("%w: %q is not in Docker on %s", runtime.ErrImageNotFound, ref, m.Name)
	}
	if e.differs[m.Name] {
		return "sha256:other-" + ref, nil
	}
	return "sha256:" + ref, nil
}

func (e *fakeEngine) ResolveImage(_ context.Context, m Machine, req api.ImageResolveRequest) (api.ImageResolveAnswer, error) {
	if err := e.record("resolve", m, req.Ref, ""); err != nil {
		return api.ImageResolveAnswer{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	d := e.tags[req.Ref]
	if d == "" {
		d = "sha256:" + req.Ref
	}
	return api.ImageResolveAnswer{Pin: req.Ref + "@" + d, Digest: d, From: "registry"}, nil
}

func (e *fakeEngine) PullImage(_ context.Context, m Machine, req api.ImagePullRequest, progress func(api.ImageProgress)) (api.ImageProgress, error) {
	if err := e.record("pull", m, req.Pin, ""); err != nil {
		return api.ImageProgress{}, err
	}
	final := api.ImageProgress{Machine: m.Name, Image: req.Image, Status: "done"}
	if progress != nil {
		progress(final)
	}
	return final, nil
}

func (e *fakeEngine) SaveImage(_ context.Context, m Machine, ref string) (io.ReadCloser, error) {
	if err := e.record("save", m, ref, ""); err != nil {
		return nil, err
	}
	return io.NopCloser(strings.NewReader("tarball of " + ref)), nil
}

func (e *fakeEngine) LoadImage(_ context.Context, m Machine, tarball io.Reader, _ api.ImageLoad) error {
	if err := e.record("load", m, "", ""); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, tarball)
	return err
}

// rig is an orchestrator over a real store, a fake fleet and a fake engine.
type rig struct {
	o      *Orchestrator
	store  *crdt.Store
	fleet  *fakeFleet
	engine *fakeEngine
}

func newRig(t *testing.T, fleet *fakeFleet, cfg Config) *rig {
	t.Helper()
	store := crdttest.Open(t, "m1")
	r := &rig{store: store, fleet: fleet, engine: newEngine(store)}
	cfg.Fleet, cfg.Records, cfg.Engine = fleet, store, r.engine
	// Quick settle and polls: the fakes answer at once.
	cfg.Settle = cmp.Or(cfg.Settle, 20*time.Millisecond)
	cfg.HealthPoll = cmp.Or(cfg.HealthPoll, 5*time.Millisecond)
	cfg.DrainGrace = cmp.Or(cfg.DrainGrace, time.Millisecond)
	r.o = New(cfg)
	return r
}

// placement is where the service's containers are, as "machine" names
// sorted, from the records in the state.
func (r *rig) placement(t *testing.T, service string) []string {
	t.Helper()
	cs, err := r.o.serviceContainers(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]string{}
	ms, _ := r.fleet.Machines(context.Background())
	for _, m := range ms {
		byID[m.ID] = m.Name
	}
	var out []string
	for _, c := range cs {
		out = append(out, byID[c.MachineID])
	}
	sort.Strings(out)
	return out
}

// containers are the service's container names, sorted.
func (r *rig) containers(t *testing.T, service string) []string {
	t.Helper()
	return r.each(t, service, func(c *record.Container) string { return c.Name })
}

// each is one field of each of the service's containers, sorted.
func (r *rig) each(t *testing.T, service string, field func(*record.Container) string) []string {
	t.Helper()
	cs, err := r.o.serviceContainers(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range cs {
		out = append(out, field(c))
	}
	slices.Sort(out)
	return out
}

// hasService says whether the service record exists.
func (r *rig) hasService(t *testing.T, name string) bool {
	t.Helper()
	_, err := r.o.service(context.Background(), name)
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// run starts a service and fails the test on an error.
func (r *rig) run(t *testing.T, req api.RunRequest) api.ServiceResult {
	t.Helper()
	res, err := r.o.RunService(context.Background(), req, nil)
	if err != nil {
		t.Fatalf("run %s: %v", req.Name, err)
	}
	if n := res.Failed(); n > 0 {
		t.Fatalf("run %s: %d containers failed: %+v", req.Name, n, res.Containers)
	}
	return res
}
