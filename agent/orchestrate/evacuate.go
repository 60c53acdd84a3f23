package orchestrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Evacuation (`leave --move`): each service with containers on a machine
// gets as many new replicas on the other machines, placed by the rules a
// scale-up follows with that machine left out; each new one must be
// healthy as a rollout's new container must, and only when all are do the
// machine's own go. A service that cannot move (a constraint, a volume
// that lives only there, no room) refuses the whole evacuation before
// anything starts, so a refusal changes nothing.

// evacuation is the plan for one machine.
type evacuation struct {
	machine Machine
	moves   []evacMove
	refused []string
	stay    []string
}

// evacMove is one container of the machine and where its replacement goes.
type evacMove struct {
	spec    runtime.ContainerSpec
	monitor time.Duration
	old     *record.Container
	to      Machine
}

// planEvacuation places the replacements of machine's containers.
func (o *Orchestrator) planEvacuation(ctx context.Context, machine string) (*evacuation, error) {
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return nil, err
	}
	e := &evacuation{}
	var others []Machine
	for _, m := range all {
		if m.ID == machine || m.Name == machine {
			e.machine = m
		} else {
			others = append(others, m)
		}
	}
	if e.machine.ID == "" {
		return nil, fmt.Errorf("%w: no machine %q", api.ErrNotFound, machine)
	}
	// The moves of every service are planned from one read of the state.
	state, err := o.readState(ctx)
	if err != nil {
		return nil, err
	}
	cs := state.containers
	here := map[string][]*record.Container{}
	for _, c := range cs {
		if c.MachineID == e.machine.ID {
			here[c.Service] = append(here[c.Service], c)
		}
	}
	services := make([]string, 0, len(here))
	for s := range here {
		services = append(services, s)
	}
	slices.Sort(services)
	var ready []Machine
	noTarget := ""
	if len(services) > 0 {
		ts, err := pickTargets(others, nil)
		if err == nil {
			var why []string
			if ready, why = o.ready(ctx, ts); len(ready) == 0 {
				noTarget = "no other machine can run containers now: " + strings.Join(why, "; ")
			}
		} else {
			noTarget = err.Error()
		}
	}
	planned := newPlannedDeploy(state)
	for _, name := range services {
		mine := here[name]
		svc, err := o.service(ctx, name)
		if errors.Is(err, api.ErrNotFound) || err == nil && svc.Mode == "global" {
			// A global service runs on the others already; a container
			// without a service is no replica to keep.
			for _, c := range mine {
				e.stay = append(e.stay, c.Name)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		var spec runtime.ContainerSpec
		if err := json.Unmarshal(svc.Spec, &spec); err != nil {
			e.refused = append(e.refused, fmt.Sprintf("no other machine can take %s: its spec is unreadable (%v)", name, err))
			continue
		}
		if noTarget != "" {
			e.refused = append(e.refused, fmt.Sprintf("no other machine can take %s: %s", name, noTarget))
			continue
		}
		var own []*record.Container
		kept := map[string]int{}
		for _, c := range cs {
			if c.Service == name {
				own = append(own, c)
				if c.MachineID != e.machine.ID {
					kept[c.MachineID]++
				}
			}
		}
		placed, err := o.placeNew(ctx, all, ready, spec, own, kept, len(mine), false, planned)
		if err != nil {
			e.refused = append(e.refused, fmt.Sprintf("no other machine can take %s: %v", name, err))
			continue
		}
		planned.add(spec, placed)
		monitor := svc.Update.Resolved(o.settle).Monitor
		for i, c := range mine {
			e.moves = append(e.moves, evacMove{spec: spec, monitor: monitor, old: c, to: placed[i]})
		}
	}
	return e, nil
}

// result says the plan as the API does.
func (e *evacuation) result() api.EvacuateResult {
	res := api.EvacuateResult{Machine: e.machine.Name, Refused: e.refused, Stay: e.stay}
	for _, m := range e.moves {
		res.Moves = append(res.Moves, api.EvacuateMove{Service: m.old.Service, From: m.old.Name, To: m.to.Name})
	}
	return res
}

// Evacuate implements api.EvacuateBackend: every replacement is made
// (in parallel) and healthy before the machine's containers are removed;
// when one fails, the replacements made are removed again and the
// machine's containers stay.
func (o *Orchestrator) Evacuate(ctx context.Context, req api.EvacuateRequest) (api.EvacuateResult, error) {
	e, err := o.planEvacuation(ctx, req.Machine)
	if err != nil {
		return api.EvacuateResult{}, err
	}
	res := e.result()
	if len(e.refused) > 0 && !req.DryRun {
		return res, fmt.Errorf("%w: %s: nothing was moved", api.ErrConflict, strings.Join(e.refused, "; "))
	}
	if req.DryRun || len(e.moves) == 0 {
		return res, nil
	}
	made := make([]*record.Container, len(e.moves))
	errs := make([]error, len(e.moves))
	var wg sync.WaitGroup
	for i, m := range e.moves {
		wg.Add(1)
		go func() {
			defer wg.Done()
			made[i], errs[i] = o.moveOne(ctx, m)
		}()
	}
	wg.Wait()
	for i := range e.moves {
		if made[i] != nil {
			res.Moves[i].New = made[i].Name
		}
		if errs[i] != nil {
			res.Moves[i].Error = errs[i].Error()
		}
	}
	if err := errors.Join(errs...); err != nil {
		var undo []*record.Container
		for _, c := range made {
			if c != nil {
				undo = append(undo, c)
			}
		}
		cctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if rm := o.actMany(cctx, "", "remove", undo); rm.Failed() > 0 {
			return res, fmt.Errorf("evacuation of %s failed (%w), and %d of the replacements made could not be removed again",
				e.machine.Name, err, rm.Failed())
		}
		return res, fmt.Errorf("evacuation of %s failed, the replacements made were removed and its containers stay: %w", e.machine.Name, err)
	}
	var leaving []drainee
	for _, m := range e.moves {
		leaving = append(leaving, drainee{e.machine, m.old})
	}
	o.drain(ctx, leaving...)
	var failed []string
	for i, m := range e.moves {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := o.act(cctx, e.machine, m.old.ID, "remove")
		cancel()
		if err != nil {
			res.Moves[i].Error = "remove: " + err.Error()
			failed = append(failed, m.old.Name)
			continue
		}
		res.Moves[i].Done = true
	}
	if len(failed) > 0 {
		return res, fmt.Errorf("the replacements on other machines run, but %s could not be removed from %s",
			strings.Join(failed, ", "), e.machine.Name)
	}
	return res, nil
}

// moveOne makes m's replacement on its machine and waits for it to be
// healthy (and for the state to say it serves); the container is
// returned once made, even when it then fails.
func (o *Orchestrator) moveOne(ctx context.Context, m evacMove) (*record.Container, error) {
	// The pin the service runs: a replacement runs what the others run.
	job := imageJob{image: m.spec.Image, policy: runtime.PullMissing}
	if err := o.pullOne(ctx, job, m.spec.RunImage(), m.to); err != nil {
		return nil, fmt.Errorf("image %s on %s: %w", m.spec.Image, m.to.Name, err)
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	c, err := o.create(cctx, m.to, m.spec)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("create %s's replacement on %s: %w", m.old.Name, m.to.Name, err)
	}
	if err := o.waitHealthy(ctx, m.to, c.ID, m.spec, m.monitor); err != nil {
		return c, fmt.Errorf("new container %s on %s %w", c.Name, m.to.Name, err)
	}
	o.waitServing(ctx, c)
	return c, nil
}

var _ api.EvacuateBackend = (*Orchestrator)(nil)
