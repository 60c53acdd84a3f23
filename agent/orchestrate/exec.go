package orchestrate

import (
	"context"
	"errors"
	"fmt"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Exec: a command in one container of a service, on whichever machine
// runs it. The plain call collects the output; the attached one hands
// back a session (TTY, input, resize, exit code) that the local API serves
// as a stream.

// ExecService implements api.ContainerBackend.
func (o *Orchestrator) ExecService(ctx context.Context, name string, req api.ExecRequest) (api.ExecResult, error) {
	name, err := o.serviceID(ctx, name)
	if err != nil {
		return api.ExecResult{}, err
	}
	c, t, err := o.execTarget(ctx, name, req)
	if err != nil {
		return api.ExecResult{}, err
	}
	res, err := o.exec(ctx, t, c.ID, req.Cmd)
	if err != nil {
		if errors.Is(err, runtime.ErrBadSpec) {
			err = fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		return api.ExecResult{}, err
	}
	return api.ExecResult{Container: c.Name, Machine: t.Name, ExitCode: res.ExitCode, Stdout: res.Stdout, Stderr: res.Stderr}, nil
}

// ExecAttach implements api.ExecAttachBackend.
func (o *Orchestrator) ExecAttach(ctx context.Context, name string, req api.ExecRequest) (api.ExecSession, api.ExecTarget, error) {
	name, err := o.serviceID(ctx, name)
	if err != nil {
		return nil, api.ExecTarget{}, err
	}
	c, t, err := o.execTarget(ctx, name, req)
	if err != nil {
		return nil, api.ExecTarget{}, err
	}
	if !t.Reachable() {
		return nil, api.ExecTarget{}, t.unreachableErr()
	}
	s, err := o.engine.Attach(ctx, t, c.ID, req.Cmd, req.ExecOptions)
	if err != nil {
		if errors.Is(err, runtime.ErrBadSpec) {
			err = fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		return nil, api.ExecTarget{}, err
	}
	return s, api.ExecTarget{Container: c.Name, Machine: t.Name}, nil
}

// execTarget picks the container an exec runs in: the one named, else a
// running one on a reachable machine (req.Machine's if given), this
// machine's first.
func (o *Orchestrator) execTarget(ctx context.Context, name string, req api.ExecRequest) (*record.Container, Machine, error) {
	if len(req.Cmd) == 0 {
		return nil, Machine{}, fmt.Errorf("%w: exec needs a command", api.ErrBadRequest)
	}
	cs, err := o.serviceContainers(ctx, name)
	if err != nil {
		return nil, Machine{}, err
	}
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return nil, Machine{}, err
	}
	byID := indexByID(all)
	var only *Machine
	if req.Machine != "" {
		for _, t := range all {
			if t.Name == req.Machine || t.ID == req.Machine {
				only = &t
			}
		}
		if only == nil {
			return nil, Machine{}, fmt.Errorf("%w: no machine %q (see 'uncloud machine ls')", api.ErrNotFound, req.Machine)
		}
	}
	var pick *record.Container
	for _, c := range cs {
		t := byID[c.MachineID]
		if only != nil && c.MachineID != only.ID {
			continue
		}
		switch {
		case req.Container != "":
			if c.Name == req.Container || c.ID == req.Container {
				pick = c
			}
		case c.State == "running" && t.Reachable():
			if pick == nil || t.State == "self" {
				pick = c
			}
		}
	}
	if pick == nil {
		switch {
		case req.Container != "" && only != nil:
			return nil, Machine{}, fmt.Errorf("%w: service %q has no container %q on %s", api.ErrNotFound, name, req.Container, only.Name)
		case req.Container != "":
			return nil, Machine{}, fmt.Errorf("%w: service %q has no container %q", api.ErrNotFound, name, req.Container)
		case only != nil:
			return nil, Machine{}, fmt.Errorf("%w: service %q has no running container on %s (or %s cannot be reached)", api.ErrNotFound, name, only.Name, only.Name)
		}
		return nil, Machine{}, fmt.Errorf("%w: service %q has no running container on a reachable machine", api.ErrNotFound, name)
	}
	t, ok := byID[pick.MachineID]
	if !ok {
		t = Machine{ID: pick.MachineID, Name: pick.MachineID, State: "down"}
	}
	return pick, t, nil
}
