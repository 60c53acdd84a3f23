// Package orchestrate owns what the network does with containers: services
// (run, scale, rm, stop/start, ls, inspect, ps, logs, exec), deploys
// (rolling replacement as each service's update_config says, waiting for
// health, rolling back or halting on a failure), the history of each
// service's versions and rollback to one, placement (spread under
// constraints, volumes, host ports and reservations: fit.go; shrink), the calls that act on a
// container of a given machine, and image push between machines.
//
// It knows the rest of the agent only through three small interfaces it
// owns: the Fleet (the network's machines as orchestration sees them), the
// Records (the replicated state; *crdt.Store satisfies it) and the Engine
// (one machine's Docker, here or over the machine API). The agent wires
// them and serves this machine's own Docker to the others.
package orchestrate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Machine is a machine of the network as orchestration sees it.
type Machine struct {
	ID, Name string
	State    string // self, alive, down
	Mode     string // kernel, netstack, or "" when unknown
	// Roles and Labels are what the machine's record says, for
	// placement constraints.
	Roles  []string
	Labels map[string]string
}

// Reachable says whether the machine can be called now.
func (m Machine) Reachable() bool { return m.State == "self" || m.State == "alive" }

// unreachableErr is what a call to a machine that gossip sees down gets,
// at once instead of after a connection timeout.
func (m Machine) unreachableErr() error {
	return fmt.Errorf("%w: machine %s is down or unreachable from this machine", api.ErrUnavailable, m.Name)
}

// Fleet is the network's machines.
type Fleet interface {
	// Machines lists every machine of the network (removed ones left
	// out), with what gossip says of each, sorted by name.
	Machines(ctx context.Context) ([]Machine, error)
}

// indexByID is ms by machine ID.
func indexByID(ms []Machine) map[string]Machine {
	out := make(map[string]Machine, len(ms))
	for _, m := range ms {
		out[m.ID] = m
	}
	return out
}

// Records is the replicated state that orchestration reads and writes:
// service records, and the container records each machine keeps of its
// own containers. *crdt.Store satisfies it.
type Records interface {
	// Get returns the record at key, or an error wrapping crdt.ErrNotFound.
	Get(ctx context.Context, key string) (crdt.Record, error)
	Put(ctx context.Context, key string, r crdt.Record) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) ([]crdt.Record, error)
}

// Engine is the Docker of one machine: this machine's runtime when m is
// self, the machine API of m otherwise. Orchestration calls it only for
// reachable machines; its errors are said as the machine said them.
type Engine interface {
	// Ready is nil when m can run containers now, or why it cannot.
	Ready(ctx context.Context, m Machine) error
	// Capacity is what m's Docker reports of its CPUs, memory and
	// architecture (zeros when m cannot say: an older agent).
	Capacity(ctx context.Context, m Machine) (Capacity, error)
	// Create makes a container on m, and m records it.
	Create(ctx context.Context, m Machine, spec runtime.ContainerSpec) (*record.Container, error)
	// Act stops, starts or removes a container on m.
	Act(ctx context.Context, m Machine, id, action string) error
	// Inspect reads a container's state from Docker on m.
	Inspect(ctx context.Context, m Machine, id string) (*record.Container, error)
	Exec(ctx context.Context, m Machine, id string, cmd []string) (runtime.ExecResult, error)
	// Attach starts cmd in a container on m with its input and output
	// attached; the session ends when the command does, or on Close.
	Attach(ctx context.Context, m Machine, id string, cmd []string, o api.ExecOptions) (api.ExecSession, error)
	// Logs calls line with each log line (Docker's timestamp first); an
	// error of line's own is returned as is.
	Logs(ctx context.Context, m Machine, id string, o runtime.LogOptions, line func(string) error) error
	// ResolveImage turns an image reference into a pin on m: the
	// registry's digest for its tag, or the image m has.
	ResolveImage(ctx context.Context, m Machine, req api.ImageResolveRequest) (api.ImageResolveAnswer, error)
	// PullImage makes m's Docker have the pinned image (unless the policy
	// says otherwise), reporting the pull's steps to progress; the answer
	// is its last word (done or present).
	PullImage(ctx context.Context, m Machine, req api.ImagePullRequest, progress func(api.ImageProgress)) (api.ImageProgress, error)
	// ImageID is the ID of the image ref on m; an error wrapping
	// runtime.ErrImageNotFound when m has no such image.
	ImageID(ctx context.Context, m Machine, ref string) (string, error)
	// SaveImage streams an image of m as a `docker save` tarball.
	SaveImage(ctx context.Context, m Machine, ref string) (io.ReadCloser, error)
	// LoadImage loads a tarball into m's Docker.
	// load says which tag and image it is, and whether it may replace
	// a tag m has for another image.
	LoadImage(ctx context.Context, m Machine, tarball io.Reader, load api.ImageLoad) error
}

// Config makes an Orchestrator. Fleet, Records and Engine are required.
type Config struct {
	Fleet   Fleet
	Records Records
	Engine  Engine
	// Pusher pushes images through the agents' registries (push.go);
	// nil leaves only `image push --method load`.
	Pusher Pusher
	Logger *slog.Logger
	// HealthyTimeout bounds how long a new container of a rollout may
	// take to be healthy; default 90 s.
	HealthyTimeout time.Duration
	// HealthPoll is how often a rollout asks a new container's state;
	// default 1 s. (A depends_on wait asks at most every dependPoll.)
	HealthPoll time.Duration
	// Settle is how long a new container must keep running (and healthy)
	// to count, unless its update_config says another monitor time;
	// default 3 s.
	Settle time.Duration
	// DrainGrace is how long a rollout lets a draining container finish
	// what it was sent before removing it; default 1 s.
	DrainGrace time.Duration
	// Sealing opens what is sealed for this machine (seal.go).
	Sealing Sealing
}

// Orchestrator runs the container commands of the network. Its exported
// methods are exactly api.ContainerBackend, api.DeployBackend,
// api.RolloutBackend, api.EvacuateBackend and api.ImageBackend, so the agent can hand it to the local API as is.
type Orchestrator struct {
	fleet   Fleet
	store   Records
	engine  Engine
	pusher  Pusher
	log     *slog.Logger
	healthy time.Duration
	poll    time.Duration
	settle  time.Duration
	grace   time.Duration
	sealing Sealing
	// exposedWarned: secret versions already said to need a rotation.
	exposedWarned sync.Map
}

// New makes an Orchestrator.
func New(c Config) *Orchestrator {
	o := &Orchestrator{fleet: c.Fleet, store: c.Records, engine: c.Engine, pusher: c.Pusher, log: c.Logger,
		healthy: c.HealthyTimeout, poll: c.HealthPoll, settle: c.Settle, grace: c.DrainGrace, sealing: c.Sealing}
	if o.log == nil {
		o.log = slog.Default()
	}
	if o.healthy <= 0 {
		o.healthy = 90 * time.Second
	}
	if o.poll <= 0 {
		o.poll = time.Second
	}
	if o.settle <= 0 {
		o.settle = 3 * time.Second
	}
	if o.grace <= 0 {
		o.grace = time.Second
	}
	return o
}

var (
	_ api.ContainerBackend  = (*Orchestrator)(nil)
	_ api.DeployBackend     = (*Orchestrator)(nil)
	_ api.ImageBackend      = (*Orchestrator)(nil)
	_ api.ExecAttachBackend = (*Orchestrator)(nil)
	_ api.LogsBackend       = (*Orchestrator)(nil)
	_ api.RolloutBackend    = (*Orchestrator)(nil)
)

// readyTimeout bounds the question "can you run containers now?".
const readyTimeout = 5 * time.Second

// ready keeps the machines that can run containers now (Docker answers,
// kernel mode), asking them all at once; notReady says why the others
// cannot.
func (o *Orchestrator) ready(ctx context.Context, ts []Machine) (ready []Machine, notReady []string) {
	ok := make([]error, len(ts))
	var wg sync.WaitGroup
	for i, t := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !t.Reachable() {
				ok[i] = t.unreachableErr()
				return
			}
			cctx, cancel := context.WithTimeout(ctx, readyTimeout)
			defer cancel()
			ok[i] = o.engine.Ready(cctx, t)
		}()
	}
	wg.Wait()
	for i, t := range ts {
		if ok[i] == nil {
			ready = append(ready, t)
		} else {
			notReady = append(notReady, ok[i].Error())
		}
	}
	return ready, notReady
}

// create makes a container on t.
func (o *Orchestrator) create(ctx context.Context, t Machine, spec runtime.ContainerSpec) (*record.Container, error) {
	if !t.Reachable() {
		return nil, t.unreachableErr()
	}
	return o.engine.Create(ctx, t, spec)
}

// act stops, starts or removes a container on t.
func (o *Orchestrator) act(ctx context.Context, t Machine, id, action string) error {
	if !t.Reachable() {
		return t.unreachableErr()
	}
	return o.engine.Act(ctx, t, id, action)
}

// inspect reads a container's state on t, from Docker there.
func (o *Orchestrator) inspect(ctx context.Context, t Machine, id string) (*record.Container, error) {
	if !t.Reachable() {
		return nil, t.unreachableErr()
	}
	return o.engine.Inspect(ctx, t, id)
}

// exec runs a command in a container on t.
func (o *Orchestrator) exec(ctx context.Context, t Machine, id string, cmd []string) (runtime.ExecResult, error) {
	if !t.Reachable() {
		return runtime.ExecResult{}, t.unreachableErr()
	}
	return o.engine.Exec(ctx, t, id, cmd)
}

// logs reads a container's log lines on t.
func (o *Orchestrator) logs(ctx context.Context, t Machine, id string, lo runtime.LogOptions, line func(string) error) error {
	if !t.Reachable() {
		return t.unreachableErr()
	}
	return o.engine.Logs(ctx, t, id, lo, line)
}
