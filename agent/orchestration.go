package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/uncloud-mesh/uncloud/agent/orchestrate"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// The agent's side of orchestration: it tells package orchestrate which
// machines there are (fleet) and lends it every machine's Docker (engine:
// the local runtime for this machine, the machine API for the others).

// newOrchestrator wires package orchestrate to this daemon.
func (d *Daemon) newOrchestrator() *orchestrate.Orchestrator {
	return orchestrate.New(orchestrate.Config{
		Fleet:   fleet{d},
		Records: d.store,
		Engine:  engine{d},
		Pusher:  pusher{d},
		Logger:  d.log.With("component", "orchestrate"),
		Sealing: d.sealing(),
	})
}

// fleet is the network's machines with what gossip says of them.
type fleet struct{ d *Daemon }

func (f fleet) Machines(ctx context.Context) ([]orchestrate.Machine, error) {
	d := f.d
	machines, err := d.machines(ctx)
	if err != nil {
		return nil, err
	}
	// Reachable from here, as the resolver and the ingress see it: a
	// machine gossip still lists but this one cannot reach gets no work.
	reach := d.reach.current(ctx)
	alive := map[string]gossipMeta{}
	for _, m := range d.gossip.Members() {
		if !reach[m.Name] {
			continue
		}
		var meta gossipMeta
		json.Unmarshal(m.Meta, &meta)
		alive[m.Name] = meta
	}
	out := make([]orchestrate.Machine, 0, len(machines))
	for _, m := range machines {
		t := orchestrate.Machine{ID: m.ID, Name: m.Name, State: "down", Roles: m.Roles, Labels: m.Labels}
		if meta, ok := alive[m.ID]; ok {
			t.State, t.Mode = "alive", meta.Mode
		}
		if m.ID == d.state.MachineID {
			t.State, t.Mode = "self", d.mode()
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// engine is a machine's Docker: the local runtime when the machine is
// this one, its machine API otherwise.
type engine struct{ d *Daemon }

func local(m orchestrate.Machine) bool { return m.State == "self" }

// remoteCallErr is how another machine's answer is said here.
func remoteCallErr(m orchestrate.Machine, err error) error {
	var re *api.StatusError
	if errors.As(err, &re) {
		return errors.New(re.Error()) // the other side's words, as if said here
	}
	return fmt.Errorf("%w: machine %s: %v", api.ErrUnavailable, m.Name, err)
}

func (e engine) Ready(ctx context.Context, m orchestrate.Machine) error {
	if local(m) {
		_, err := e.d.containers.runtime()
		return err
	}
	if err := e.d.machineAPI.RuntimeReady(ctx, m.ID); err != nil {
		return remoteCallErr(m, err)
	}
	return nil
}

func (e engine) Capacity(ctx context.Context, m orchestrate.Machine) (orchestrate.Capacity, error) {
	var c api.RuntimeCapacity
	var err error
	if local(m) {
		c, err = e.d.containers.capacity(ctx)
	} else if c, err = e.d.machineAPI.RuntimeCapacity(ctx, m.ID); err != nil {
		err = remoteCallErr(m, err)
	}
	return orchestrate.Capacity{CPUs: float64(c.CPUs), Memory: c.Memory, Arch: c.Arch}, err
}

func (e engine) Create(ctx context.Context, m orchestrate.Machine, spec runtime.ContainerSpec) (*record.Container, error) {
	if local(m) {
		return e.d.containers.create(ctx, spec)
	}
	c, err := e.d.machineAPI.CreateContainer(ctx, m.ID, spec)
	if err != nil {
		return nil, remoteCallErr(m, err)
	}
	return c, nil
}

func (e engine) Act(ctx context.Context, m orchestrate.Machine, id, action string) error {
	if local(m) {
		return e.d.containers.act(ctx, id, action)
	}
	if err := e.d.machineAPI.ContainerAction(ctx, m.ID, id, action); err != nil {
		return remoteCallErr(m, err)
	}
	return nil
}

func (e engine) Inspect(ctx context.Context, m orchestrate.Machine, id string) (*record.Container, error) {
	if local(m) {
		rt, err := e.d.containers.runtime()
		if err != nil {
			return nil, err
		}
		c, err := rt.Inspect(ctx, id)
		if err != nil {
			return nil, err
		}
		return containerRecord(e.d.state.MachineID, c), nil
	}
	c, err := e.d.machineAPI.InspectContainer(ctx, m.ID, id)
	if err != nil {
		return nil, remoteCallErr(m, err)
	}
	return c, nil
}

func (e engine) Exec(ctx context.Context, m orchestrate.Machine, id string, cmd []string) (runtime.ExecResult, error) {
	if local(m) {
		rt, err := e.d.containers.runtime()
		if err != nil {
			return runtime.ExecResult{}, err
		}
		return rt.Exec(ctx, id, cmd)
	}
	res, err := e.d.machineAPI.ExecContainer(ctx, m.ID, id, cmd)
	if err != nil {
		return runtime.ExecResult(res), remoteCallErr(m, err)
	}
	return runtime.ExecResult(res), nil
}

func (e engine) Logs(ctx context.Context, m orchestrate.Machine, id string, o runtime.LogOptions, line func(string) error) error {
	if local(m) {
		rt, err := e.d.containers.runtime()
		if err != nil {
			return err
		}
		return rt.Logs(ctx, id, o, line)
	}
	err := e.d.machineAPI.ContainerLogs(ctx, m.ID, id, api.LogsRequest{Follow: o.Follow, Since: o.Since, Until: o.Until, Tail: o.Tail}, line)
	var ce *api.CallError
	if errors.As(err, &ce) {
		return remoteCallErr(m, err)
	}
	return err // line's own, or nil
}

func (e engine) ImageID(ctx context.Context, m orchestrate.Machine, ref string) (string, error) {
	if local(m) {
		rt, err := e.d.containers.runtime()
		if err != nil {
			return "", err
		}
		return rt.ImageID(ctx, ref)
	}
	id, err := e.d.machineAPI.ImageID(ctx, m.ID, ref)
	if errors.Is(err, api.ErrNotFound) {
		return "", fmt.Errorf("%w: %v", runtime.ErrImageNotFound, err)
	}
	if err != nil {
		return "", remoteCallErr(m, err)
	}
	return id, nil
}

func (e engine) SaveImage(ctx context.Context, m orchestrate.Machine, ref string) (io.ReadCloser, error) {
	if !local(m) {
		return nil, fmt.Errorf("%w: images are saved on the machine that has them, not through %s", api.ErrBadRequest, m.Name)
	}
	rt, err := e.d.containers.runtime()
	if err != nil {
		return nil, err
	}
	return rt.SaveImage(ctx, ref)
}

func (e engine) LoadImage(ctx context.Context, m orchestrate.Machine, tarball io.Reader, load api.ImageLoad) error {
	if local(m) {
		rt, err := e.d.containers.runtime()
		if err != nil {
			return err
		}
		_, err = rt.LoadImage(ctx, tarball, runtime.LoadOptions{Force: load.Force})
		return err
	}
	if _, err := e.d.machineAPI.LoadImage(ctx, m.ID, tarball, load); err != nil {
		return remoteCallErr(m, err)
	}
	return nil
}

var (
	_ orchestrate.Fleet  = fleet{}
	_ orchestrate.Engine = engine{}
	// The local API finds the container commands on the Daemon: they are
	// the embedded Orchestrator's.
	_ api.ContainerBackend  = (*Daemon)(nil)
	_ api.DeployBackend     = (*Daemon)(nil)
	_ api.ImageBackend      = (*Daemon)(nil)
	_ api.ExecAttachBackend = (*Daemon)(nil)
	_ api.LogsBackend       = (*Daemon)(nil)
	_ api.RolloutBackend    = (*Daemon)(nil)
)

func (e engine) ResolveImage(ctx context.Context, m orchestrate.Machine, req api.ImageResolveRequest) (api.ImageResolveAnswer, error) {
	if local(m) {
		return e.d.containers.resolveImage(ctx, req)
	}
	a, err := e.d.machineAPI.ResolveImage(ctx, m.ID, req)
	if err != nil {
		return a, remoteCallErr(m, err)
	}
	return a, nil
}

func (e engine) PullImage(ctx context.Context, m orchestrate.Machine, req api.ImagePullRequest, progress func(api.ImageProgress)) (api.ImageProgress, error) {
	if local(m) {
		final, err := e.d.containers.pullImage(ctx, req, progress)
		if err == nil && progress != nil {
			progress(final)
		}
		return final, err
	}
	final, err := e.d.machineAPI.PullImage(ctx, m.ID, req, progress)
	if err != nil {
		return final, remoteCallErr(m, err)
	}
	return final, nil
}
