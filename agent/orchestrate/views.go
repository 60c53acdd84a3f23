package orchestrate

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// What the network runs, as the CLI shows it (ps, ls, inspect) and
// reaches into it (logs, exec): reads of the records and calls to the
// machine that runs a container; nothing here changes the state.

// Containers implements api.ContainerBackend: every container record of
// the network; those of machines this one cannot reach are marked so.
func (o *Orchestrator) Containers(ctx context.Context) ([]api.ContainerInfo, error) {
	cs, err := o.serviceContainers(ctx, "")
	if err != nil {
		return nil, err
	}
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return nil, err
	}
	byID := indexByID(all)
	out := make([]api.ContainerInfo, 0, len(cs))
	for _, c := range cs {
		t, ok := byID[c.MachineID]
		if !ok {
			continue // a removed machine's leftovers
		}
		info := containerInfo(c, t)
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		if a.Machine != b.Machine {
			return a.Machine < b.Machine
		}
		return a.Name < b.Name
	})
	return out, nil
}

func containerInfo(c *record.Container, t Machine) api.ContainerInfo {
	state := t.State
	if state == "down" {
		state = "unreachable"
	}
	info := api.ContainerInfo{Machine: t.Name, MachineID: c.MachineID, MachineState: state, ID: c.ID, Name: c.Name,
		Service: c.Service, Image: c.Image, ImageDigest: c.ImageDigest, Address: c.Address, State: c.State, Health: c.Health, Created: c.Created}
	for _, p := range c.Ports {
		s := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.Name != "" {
			s = p.Name + ":" + s
		}
		info.Ports = append(info.Ports, s)
	}
	return info
}

// Services implements api.ContainerBackend.
func (o *Orchestrator) Services(ctx context.Context) ([]api.ServiceInfo, error) {
	recs, err := o.store.List(ctx, record.ServicesPrefix)
	if err != nil {
		return nil, err
	}
	cs, err := o.Containers(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]*api.ServiceInfo{}
	var names []string
	get := func(name string) *api.ServiceInfo {
		if s, ok := byName[name]; ok {
			return s
		}
		s := &api.ServiceInfo{Name: name, Project: record.ServiceProject(name), Mode: "-"}
		byName[name] = s
		names = append(names, name)
		return s
	}
	for _, r := range recs {
		svc, ok := r.(*record.Service)
		if !ok {
			continue
		}
		s := get(svc.Name)
		s.Mode, s.Ports, s.AllowFrom = svc.Mode, svc.Ports, svc.AllowFrom
		var spec runtime.ContainerSpec
		if json.Unmarshal(svc.Spec, &spec) == nil {
			s.Image, s.ImageDigest = spec.Image, spec.PinDigest()
		}
	}
	for _, c := range cs {
		if c.Service == "" {
			continue
		}
		s := get(c.Service)
		s.Total++
		if c.State == "running" {
			s.Running++
		}
		if s.Image == "" {
			s.Image = c.Image
		}
		if len(s.Machines) == 0 || s.Machines[len(s.Machines)-1] != c.Machine {
			s.Machines = append(s.Machines, c.Machine)
		}
	}
	// Grouped by project, the default project first.
	sort.Slice(names, func(i, j int) bool {
		pi, pj := byName[names[i]].Project, byName[names[j]].Project
		if pi != pj {
			return pi == record.DefaultProject || pj != record.DefaultProject && pi < pj
		}
		return names[i] < names[j]
	})
	out := make([]api.ServiceInfo, 0, len(names))
	for _, n := range names {
		out = append(out, *byName[n])
	}
	return out, nil
}

// InspectService implements api.ContainerBackend.
func (o *Orchestrator) InspectService(ctx context.Context, name string) (api.ServiceDetail, error) {
	name, err := o.serviceID(ctx, name)
	if err != nil {
		return api.ServiceDetail{}, err
	}
	svcs, err := o.Services(ctx)
	if err != nil {
		return api.ServiceDetail{}, err
	}
	var det api.ServiceDetail
	found := false
	for _, s := range svcs {
		if s.Name == name {
			det.ServiceInfo, found = s, true
		}
	}
	if !found {
		return det, fmt.Errorf("%w: no service %q (see 'uncloud ls')", api.ErrNotFound, name)
	}
	if svc, err := o.service(ctx, name); err == nil {
		det.Spec = runtime.PublicJSON(svc.Spec) // names only, no ciphertext
	}
	cs, err := o.Containers(ctx)
	if err != nil {
		return det, err
	}
	for _, c := range cs {
		if c.Service == name {
			det.Containers = append(det.Containers, c)
		}
	}
	return det, nil
}
