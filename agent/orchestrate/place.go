package orchestrate

import (
	"context"
	"encoding/json"
	"slices"
	"sync"

	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// The state placement reads: what every machine already runs (host
// ports, reservations), where a service's volumes live, and, when the
// service asks for room or an architecture, what each machine's Docker
// reports.

// newWant is what a service asks of placement; cs are its containers now.
func (o *Orchestrator) newWant(ctx context.Context, all []Machine, spec runtime.ContainerSpec, cs []*record.Container,
	planned *plannedDeploy, state *stateView) (want, error) {
	w := want{service: spec.Service, spec: spec}
	var err error
	if w.constraints, err = parseConstraints(spec.Placement); err != nil {
		return w, err
	}
	w.pinned, err = o.volumePins(ctx, all, spec, cs, planned, state)
	return w, err
}

// candidates describe the targets with their load; kept counts the
// service's containers that stay on each machine (by ID).
func (o *Orchestrator) candidates(ctx context.Context, targets []Machine, w want, kept map[string]int, state *stateView) []candidate {
	specs, cs := state.serviceSpecs(), state.containers
	loads := map[string]*load{}
	for _, t := range targets {
		loads[t.ID] = &load{ofService: kept[t.ID], total: w.planned.containersOn(t.ID)}
	}
	for _, c := range cs {
		if l := loads[c.MachineID]; l != nil {
			l.total++
		}
		l, spec := loads[c.MachineID], specs[c.Service]
		if l == nil || spec == nil {
			continue
		}
		l.cpus += spec.ReserveCPUs
		l.memory += spec.ReserveMemory
		if c.Service == w.service {
			continue // its own replicas: counted as kept
		}
		for _, b := range fixedBindings(*spec) {
			l.ports = append(l.ports, portUse{Binding: b, Service: c.Service})
		}
	}
	var caps []Capacity
	if w.spec.ReserveCPUs > 0 || w.spec.ReserveMemory > 0 || needsArch(w.constraints) {
		caps = o.capacities(ctx, targets)
	}
	out := make([]candidate, len(targets))
	for i, t := range targets {
		out[i] = candidate{Machine: t, load: *loads[t.ID]}
		if caps != nil {
			out[i].capacity = caps[i]
		}
	}
	return out
}

// capacities asks every target's Docker at once; a machine that does
// not answer gets zeros (unknown), and the create there says what is wrong.
func (o *Orchestrator) capacities(ctx context.Context, ts []Machine) []Capacity {
	out := make([]Capacity, len(ts))
	var wg sync.WaitGroup
	for i, t := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, readyTimeout)
			defer cancel()
			c, err := o.engine.Capacity(cctx, t)
			if err != nil {
				o.log.Warn("machine capacity unknown; placement does not count it", "machine", t.Name, "err", err)
				return
			}
			out[i] = c
		}()
	}
	wg.Wait()
	return out
}

// volumePins are the machines (ID to name) that hold a service's named
// volumes: where its containers are, and where its record says volumes
// were made. Empty for a spec without named volumes.
func (o *Orchestrator) volumePins(ctx context.Context, all []Machine, spec runtime.ContainerSpec, cs []*record.Container,
	planned *plannedDeploy, state *stateView) (map[string]string, error) {
	vols := spec.NamedVolumes()
	if len(vols) == 0 {
		return nil, nil
	}
	names := map[string]string{}
	for _, m := range all {
		names[m.ID] = m.Name
	}
	pins := map[string]string{}
	add := func(id string) {
		if n, ok := names[id]; ok {
			pins[id] = n
		}
	}
	for _, c := range cs {
		add(c.MachineID)
	}
	if svc, err := o.service(ctx, spec.Service); err == nil {
		for _, id := range svc.VolumeMachines {
			add(id)
		}
	}
	// A volume another service mounts too lives where that service's
	// containers are (or its record says it was made), and where this
	// deploy placed it for a service planned before: a Docker volume is
	// one machine's, so services that share one share that machine.
	for _, id := range state.volumeHolders(spec.Service, vols) {
		add(id)
	}
	for _, v := range vols {
		for _, id := range planned.volumeOn(v) {
			add(id)
		}
	}
	return pins, nil
}

// volumeHolders are the machines (IDs) where services other than service
// hold any of the named volumes vols.
func (v *stateView) volumeHolders(service string, vols []string) []string {
	sharing := map[string]bool{}
	var out []string
	for _, svc := range v.services {
		if svc.Name == service {
			continue
		}
		var other runtime.ContainerSpec
		if json.Unmarshal(svc.Spec, &other) != nil {
			continue
		}
		for _, v := range other.NamedVolumes() {
			if slices.Contains(vols, v) {
				sharing[svc.Name] = true
				out = append(out, svc.VolumeMachines...)
				break
			}
		}
	}
	for _, c := range v.containers {
		if sharing[c.Service] {
			out = append(out, c.MachineID)
		}
	}
	return out
}

// plannedDeploy is what a deploy has placed so far, for the services it
// plans next: how many new containers on each machine (their spread),
// and where each named volume will be (services that share one go
// together).
type plannedDeploy struct {
	containers map[string]int      // machine ID -> new containers
	volumes    map[string][]string // volume name -> machine IDs
	// state is the view of the state the whole plan works from; nil:
	// each placement reads its own (stateOf).
	state *stateView
}

func newPlannedDeploy(state *stateView) *plannedDeploy {
	return &plannedDeploy{containers: map[string]int{}, volumes: map[string][]string{}, state: state}
}

// add records the new containers of spec on machines.
func (p *plannedDeploy) add(spec runtime.ContainerSpec, machines []Machine) {
	for _, t := range machines {
		p.containers[t.ID]++
		for _, v := range spec.NamedVolumes() {
			if !slices.Contains(p.volumes[v], t.ID) {
				p.volumes[v] = append(p.volumes[v], t.ID)
			}
		}
	}
}

func (p *plannedDeploy) containersOn(machineID string) int {
	if p == nil {
		return 0
	}
	return p.containers[machineID]
}

func (p *plannedDeploy) volumeOn(volume string) []string {
	if p == nil {
		return nil
	}
	return p.volumes[volume]
}

// volumeMachines are the machines the service's record says hold its
// volumes (read before a deploy rewrites the record).
func (o *Orchestrator) volumeMachines(ctx context.Context, service string) []string {
	if svc, err := o.service(ctx, service); err == nil {
		return svc.VolumeMachines
	}
	return nil
}

// noteVolumes adds the machines where a service with named volumes now
// has containers (and held, machines known to hold them) to its
// record's VolumeMachines, so the pin outlives its containers (scale to
// 0, a failed rollout, a deploy that rewrote the record).
func (o *Orchestrator) noteVolumes(ctx context.Context, service string, held ...string) {
	svc, err := o.service(ctx, service)
	if err != nil {
		return
	}
	var spec runtime.ContainerSpec
	if json.Unmarshal(svc.Spec, &spec) != nil || len(spec.NamedVolumes()) == 0 {
		return
	}
	cs, err := o.serviceContainers(ctx, service)
	if err != nil {
		return
	}
	ids := slices.Clone(svc.VolumeMachines)
	for _, id := range held {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	for _, c := range cs {
		if !slices.Contains(ids, c.MachineID) {
			ids = append(ids, c.MachineID)
		}
	}
	slices.Sort(ids)
	if slices.Equal(ids, svc.VolumeMachines) {
		return
	}
	svc.VolumeMachines = ids
	if err := o.store.Put(ctx, svc.Key(), svc); err != nil {
		o.log.Warn("where the service's volumes live not recorded", "service", service, "err", err)
	}
}

// placeNew is the whole placement of n new containers of spec's service
// on targets: the rules of fit.go over the state. kept are the service's
// containers that stay, by machine ID.
func (o *Orchestrator) placeNew(ctx context.Context, all, targets []Machine, spec runtime.ContainerSpec,
	cs []*record.Container, kept map[string]int, n int, global bool, planned *plannedDeploy) ([]Machine, error) {
	state, err := o.stateOf(ctx, planned)
	if err != nil {
		return nil, err
	}
	w, err := o.newWant(ctx, all, spec, cs, planned, state)
	if err != nil {
		return nil, err
	}
	w.planned = planned
	cands := o.candidates(ctx, targets, w, kept, state)
	if global {
		return fitGlobal(cands, w)
	}
	return fit(cands, w, n)
}
