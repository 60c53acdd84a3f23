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
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Services: the machine that gets a command places containers and calls
// each target machine directly; every machine records its own containers.

const callTimeout = 2 * time.Minute

// placeTargets are the machines new containers go to: the named ones
// (which then say themselves why they cannot), or every live machine
// that can run containers now.
func (o *Orchestrator) placeTargets(ctx context.Context, all []Machine, names []string) ([]Machine, error) {
	ts, err := pickTargets(all, names)
	if err != nil || len(names) > 0 {
		return ts, err
	}
	ready, why := o.ready(ctx, ts)
	if len(ready) == 0 {
		return nil, fmt.Errorf("%w: no machine can run containers now: %s", api.ErrUnavailable, strings.Join(why, "; "))
	}
	if out := append(leftOut(all, ts), why...); len(out) > 0 {
		// The placement goes on with the others; say which were left out,
		// or a replica count that lands on fewer machines is a puzzle.
		o.log.Warn("machines left out of placement", "why", strings.Join(out, "; "))
	}
	return ready, nil
}

// leftOut says why each machine of all that pickTargets did not take was
// left out.
func leftOut(all, taken []Machine) []string {
	var out []string
	for _, m := range all {
		switch {
		case slices.ContainsFunc(taken, func(t Machine) bool { return t.ID == m.ID }):
		case m.Mode == "netstack":
			out = append(out, m.Name+": netstack mode runs no containers")
		default:
			out = append(out, m.Name+": "+m.State+" from this machine")
		}
	}
	return out
}

// pickTargets resolves -m names, or takes every live machine that can run
// containers (not netstack).
func pickTargets(all []Machine, names []string) ([]Machine, error) {
	if len(names) == 0 {
		var out []Machine
		for _, t := range all {
			if t.Reachable() && t.Mode != "netstack" {
				out = append(out, t)
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%w: no live machine can run containers (netstack machines cannot: their agents lack CAP_NET_ADMIN or were started with --userspace; machine ls says why)", api.ErrUnavailable)
		}
		return out, nil
	}
	var out []Machine
	seen := map[string]bool{}
	for _, n := range names {
		var found *Machine
		for i := range all {
			if all[i].Name == n || all[i].ID == n {
				found = &all[i]
				break
			}
		}
		if found == nil {
			var known []string
			for _, t := range all {
				known = append(known, t.Name)
			}
			return nil, fmt.Errorf("%w: unknown machine %q (machines: %s)", api.ErrBadRequest, n, strings.Join(known, ", "))
		}
		if !seen[found.ID] {
			out = append(out, *found)
			seen[found.ID] = true
		}
	}
	return out, nil
}

// serviceNameFromImage is the default service name: the image's last path
// part without tag or digest, as a DNS label.
func serviceNameFromImage(image string) string {
	base := image[strings.LastIndex(image, "/")+1:]
	base, _, _ = strings.Cut(base, "@")
	base, _, _ = strings.Cut(base, ":")
	var b strings.Builder
	for _, c := range strings.ToLower(base) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-")
	if len(name) > 50 {
		name = strings.Trim(name[:50], "-")
	}
	if name == "" {
		name = "service"
	}
	return name
}

// serviceContainers are the container records of a service, on every machine.
func (o *Orchestrator) serviceContainers(ctx context.Context, service string) ([]*record.Container, error) {
	recs, err := o.store.List(ctx, record.ContainersPrefix)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []*record.Container
	for _, r := range recs {
		if c, ok := r.(*record.Container); ok && (service == "" || c.Service == service) {
			out = append(out, c)
		}
	}
	return out, nil
}

func (o *Orchestrator) service(ctx context.Context, name string) (*record.Service, error) {
	r, err := o.store.Get(ctx, record.ServicesPrefix+name)
	if errors.Is(err, crdt.ErrNotFound) {
		return nil, fmt.Errorf("%w: no service %q (see 'uncloud ls')", api.ErrNotFound, name)
	}
	if err != nil {
		return nil, err
	}
	s, ok := r.(*record.Service)
	if !ok {
		return nil, fmt.Errorf("record %s is not a service", r.Key())
	}
	return s, nil
}

// RunService implements api.ContainerBackend.
func (o *Orchestrator) RunService(ctx context.Context, req api.RunRequest, progress func(api.RunEvent)) (api.ServiceResult, error) {
	progress = lockedProgress(progress)
	if req.Name == "" {
		req.Name = serviceNameFromImage(req.Image)
	}
	if req.Project != "" && req.Project != record.DefaultProject {
		if err := record.CheckProjectName(req.Project); err != nil {
			return api.ServiceResult{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		if strings.Contains(req.Name, ".") {
			return api.ServiceResult{}, fmt.Errorf("%w: service name %q: a name has no dot (the project is given apart)", api.ErrBadRequest, req.Name)
		}
		req.Name = record.ServiceID(req.Name, req.Project)
	}
	if err := record.CheckServiceID(req.Name); err != nil {
		return api.ServiceResult{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if req.Mode == "" {
		req.Mode = "replicated"
	}
	if req.Mode != "replicated" && req.Mode != "global" {
		return api.ServiceResult{}, fmt.Errorf("%w: mode %q is not replicated or global", api.ErrBadRequest, req.Mode)
	}
	if req.Replicas == 0 {
		req.Replicas = 1
	}
	if req.Replicas < 0 || req.Replicas > 1000 {
		return api.ServiceResult{}, fmt.Errorf("%w: replicas %d is outside 1..1000", api.ErrBadRequest, req.Replicas)
	}
	spec, err := specFromRequest(req)
	if err != nil {
		return api.ServiceResult{}, err
	}
	if err := req.Update.Check(); err != nil {
		return api.ServiceResult{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	_, allowFrom, err := record.ParseAllowFromList(req.AllowFrom)
	if err != nil {
		return api.ServiceResult{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if _, err := o.service(ctx, req.Name); err == nil {
		return api.ServiceResult{}, fmt.Errorf("%w: service %q exists: change its size with 'uncloud scale %s N' or remove it with 'uncloud rm %s'",
			api.ErrConflict, req.Name, req.Name, req.Name)
	}
	if cs, err := o.serviceContainers(ctx, req.Name); err == nil && len(cs) > 0 {
		return api.ServiceResult{}, fmt.Errorf("%w: service %q still has %d containers (e.g. %s): remove them with 'uncloud rm %s'",
			api.ErrConflict, req.Name, len(cs), cs[0].Name, req.Name)
	}
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return api.ServiceResult{}, err
	}
	targets, err := o.placeTargets(ctx, all, req.Machines)
	if err != nil {
		return api.ServiceResult{}, err
	}
	placed, err := o.placeNew(ctx, all, targets, spec, nil, nil, req.Replicas, req.Mode == "global", nil)
	if err != nil {
		return api.ServiceResult{}, err
	}
	job, err := newImageJob(req.Image, req.Pull, req.RegistryAuth, imageEvents(progress))
	if err != nil {
		return api.ServiceResult{}, err
	}
	pinned, err := o.pin(ctx, job, placed, false)
	switch {
	case err == nil:
		spec.ImagePin = pinned.Pin
	case isUnavailable(err):
		// No target answers: each create says so for its machine.
	default:
		return api.ServiceResult{}, err
	}
	if err := o.sealSpec(ctx, &spec, req, nil, false); err != nil {
		return api.ServiceResult{}, err
	}
	specJSON, _ := json.Marshal(spec)
	svc := &record.Service{Name: req.Name, Mode: req.Mode, Ports: spec.Ports, Spec: specJSON, AllowFrom: allowFrom, Update: req.Update}
	if err := o.store.Put(ctx, svc.Key(), svc); err != nil {
		return api.ServiceResult{}, fmt.Errorf("write service record: %w", err)
	}
	res := o.pullAndCreate(ctx, job, spec, placed, containerEvents(progress))
	o.noteVolumes(ctx, req.Name)
	if len(res.Containers) > 0 && res.Failed() == len(res.Containers) {
		// Nothing runs: leave no service behind, so the command can be retried as is.
		if err := o.store.Delete(ctx, svc.Key()); err != nil {
			o.log.Warn("service record of a failed run not deleted", "service", svc.Name, "err", err)
		}
		return res, nil
	}
	names := indexByID(all)
	o.addVersion(ctx, svc, nil, record.Version{Action: "run", User: req.By}, names)
	return res, nil
}

// pullAndCreate pulls the spec's pinned image on the placed machines, then
// creates a container per placement on those where the pull worked; the
// others get their pull's error as their result.
func (o *Orchestrator) pullAndCreate(ctx context.Context, job imageJob, spec runtime.ContainerSpec, placed []Machine,
	progress func(api.ContainerResult)) api.ServiceResult {
	failed := o.pullOn(ctx, job, spec.RunImage(), placed)
	var ok []Machine
	var bad []api.ContainerResult
	for _, t := range placed {
		if err, no := failed[t.ID]; no {
			r := api.ContainerResult{Machine: t.Name, Action: "created", Error: err.Error()}
			bad = append(bad, r)
			if progress != nil {
				progress(r)
			}
			continue
		}
		ok = append(ok, t)
	}
	res := o.createMany(ctx, spec, ok, progress)
	res.Containers = append(res.Containers, bad...)
	return res
}

// imageEvents and containerEvents feed one kind of progress into a
// stream of api.RunEvent.
func imageEvents(f func(api.RunEvent)) func(api.ImageProgress) {
	if f == nil {
		return nil
	}
	return func(u api.ImageProgress) { f(api.RunEvent{Image: &u}) }
}

func containerEvents(f func(api.RunEvent)) func(api.ContainerResult) {
	if f == nil {
		return nil
	}
	return func(c api.ContainerResult) { f(api.RunEvent{Container: &c}) }
}

// perMachine bounds the calls one command makes to one machine at once:
// machines work in parallel, and no engine gets hundreds of creates at once.
const perMachine = 4

// createMany creates one container per target, in parallel.
// progress, when not nil, gets each result as soon as it is known, one
// call at a time.
func (o *Orchestrator) createMany(ctx context.Context, spec runtime.ContainerSpec, placed []Machine, progress func(api.ContainerResult)) api.ServiceResult {
	res := api.ServiceResult{Service: spec.Service, Containers: make([]api.ContainerResult, len(placed))}
	var progressMu sync.Mutex
	var wg sync.WaitGroup
	sems := map[string]chan struct{}{}
	for _, t := range placed {
		if sems[t.ID] == nil {
			sems[t.ID] = make(chan struct{}, perMachine)
		}
	}
	for i, t := range placed {
		sem := sems[t.ID]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			r := api.ContainerResult{Machine: t.Name, Action: "created"}
			c, err := o.create(cctx, t, spec)
			if err != nil {
				r.Error = err.Error()
			} else {
				r.Name, r.ID, r.Address = c.Name, c.ID, c.Address
			}
			res.Containers[i] = r
			if progress != nil {
				progressMu.Lock()
				progress(r)
				progressMu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res
}

// actMany applies an action to containers, in parallel.
func (o *Orchestrator) actMany(ctx context.Context, service, action string, cs []*record.Container) api.ServiceResult {
	all, _ := o.fleet.Machines(ctx)
	byID := indexByID(all)
	done := map[string]string{"stop": "stopped", "start": "started", "remove": "removed"}[action]
	res := api.ServiceResult{Service: service, Containers: make([]api.ContainerResult, len(cs))}
	var wg sync.WaitGroup
	sems := map[string]chan struct{}{}
	for _, c := range cs {
		if sems[c.MachineID] == nil {
			sems[c.MachineID] = make(chan struct{}, perMachine)
		}
	}
	for i, c := range cs {
		sem := sems[c.MachineID]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			t, ok := byID[c.MachineID]
			if !ok {
				t = Machine{ID: c.MachineID, Name: c.MachineID, State: "down"}
			}
			r := api.ContainerResult{Machine: t.Name, Name: c.Name, ID: c.ID, Address: c.Address, Action: done}
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			if err := o.act(cctx, t, c.ID, action); err != nil {
				r.Error = err.Error()
			} else if action == "remove" {
				o.waitForgotten(cctx, c)
			}
			res.Containers[i] = r
		}()
	}
	wg.Wait()
	return res
}

// ScaleService implements api.ContainerBackend.
func (o *Orchestrator) ScaleService(ctx context.Context, name string, req api.ScaleRequest, progress func(api.RunEvent)) (api.ServiceResult, error) {
	name, err := o.serviceID(ctx, name)
	if err != nil {
		return api.ServiceResult{}, err
	}
	progress = lockedProgress(progress)
	replicas := req.Replicas
	svc, err := o.service(ctx, name)
	if err != nil {
		return api.ServiceResult{}, err
	}
	if svc.Mode == "global" {
		return api.ServiceResult{}, fmt.Errorf("%w: service %q is global (one container per machine): it cannot be scaled", api.ErrBadRequest, name)
	}
	if replicas < 0 || replicas > 1000 {
		return api.ServiceResult{}, fmt.Errorf("%w: replicas %d is outside 0..1000", api.ErrBadRequest, replicas)
	}
	var spec runtime.ContainerSpec
	if err := json.Unmarshal(svc.Spec, &spec); err != nil {
		return api.ServiceResult{}, fmt.Errorf("service %q has no readable spec (made by an older version?): %w", name, err)
	}
	cs, err := o.serviceContainers(ctx, name)
	if err != nil {
		return api.ServiceResult{}, err
	}
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return api.ServiceResult{}, err
	}
	switch {
	case replicas > len(cs):
		targets, err := o.placeTargets(ctx, all, nil)
		if err != nil {
			return api.ServiceResult{}, err
		}
		existing := map[string]int{}
		for _, c := range cs {
			existing[c.MachineID]++
		}
		placed, err := o.placeNew(ctx, all, targets, spec, cs, existing, replicas-len(cs), false, nil)
		if err != nil {
			return api.ServiceResult{}, err
		}
		// The pin the service was run with: a scale-up never re-resolves,
		// so new replicas run what the others run.
		job := imageJob{image: spec.Image, policy: runtime.PullMissing, auth: req.RegistryAuth, progress: imageEvents(progress)}
		res := o.pullAndCreate(ctx, job, spec, placed, containerEvents(progress))
		o.noteVolumes(ctx, name)
		return res, nil
	case replicas < len(cs):
		state := map[string]string{}
		for _, t := range all {
			state[t.ID] = t.State
		}
		var vs []victim
		for _, c := range cs {
			vs = append(vs, victim{ID: c.ID, Name: c.Name, Machine: c.MachineID, Running: c.State == "running",
				Reachable: state[c.MachineID] == "self" || state[c.MachineID] == "alive"})
		}
		chosen := shrink(vs, len(cs)-replicas)
		byID := map[string]*record.Container{}
		for _, c := range cs {
			byID[c.ID] = c
		}
		var rm []*record.Container
		for _, v := range chosen {
			rm = append(rm, byID[v.ID])
		}
		res := o.actMany(ctx, name, "remove", rm)
		if len(chosen) < len(cs)-replicas {
			return res, fmt.Errorf("%w: only %d of %d containers to remove are on reachable machines; removed what could be",
				api.ErrUnavailable, len(chosen), len(cs)-replicas)
		}
		return res, nil
	}
	return api.ServiceResult{Service: name}, nil
}

// RemoveService implements api.ContainerBackend.
func (o *Orchestrator) RemoveService(ctx context.Context, name string) (api.ServiceResult, error) {
	name, err := o.serviceID(ctx, name)
	if err != nil {
		return api.ServiceResult{}, err
	}
	_, svcErr := o.service(ctx, name)
	cs, err := o.serviceContainers(ctx, name)
	if err != nil {
		return api.ServiceResult{}, err
	}
	if svcErr != nil && len(cs) == 0 {
		return api.ServiceResult{}, svcErr
	}
	res := o.actMany(ctx, name, "remove", cs)
	if err := o.store.Delete(ctx, record.ServicesPrefix+name); err != nil {
		return res, fmt.Errorf("delete service record: %w", err)
	}
	// Its history goes with it: a service run again under the name
	// starts a new one.
	if err := o.store.Delete(ctx, record.HistoryPrefix+name); err != nil && !errors.Is(err, crdt.ErrNotFound) {
		return res, fmt.Errorf("delete history of %s: %w", name, err)
	}
	return res, nil
}

func (o *Orchestrator) stopStart(ctx context.Context, name, action string) (api.ServiceResult, error) {
	name, err := o.serviceID(ctx, name)
	if err != nil {
		return api.ServiceResult{}, err
	}
	cs, err := o.serviceContainers(ctx, name)
	if err != nil {
		return api.ServiceResult{}, err
	}
	if len(cs) == 0 {
		if _, err := o.service(ctx, name); err != nil {
			return api.ServiceResult{}, err
		}
	}
	return o.actMany(ctx, name, action, cs), nil
}

// StopService implements api.ContainerBackend.
func (o *Orchestrator) StopService(ctx context.Context, name string) (api.ServiceResult, error) {
	return o.stopStart(ctx, name, "stop")
}

// StartService implements api.ContainerBackend.
func (o *Orchestrator) StartService(ctx context.Context, name string) (api.ServiceResult, error) {
	return o.stopStart(ctx, name, "start")
}
