package orchestrate

import (
	"context"
	"encoding/json"
	"slices"
	"sort"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

var _ api.VolumeBackend = (*Orchestrator)(nil)

// Volumes implements api.VolumeBackend from the state: each service's
// named volumes on each machine that holds them (where it has
// containers, and where its record says they were made). Volumes that
// no service mounts are Docker's alone and not listed.
func (o *Orchestrator) Volumes(ctx context.Context) ([]api.VolumeInfo, error) {
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	for _, m := range all {
		names[m.ID] = m.Name
	}
	recs, err := o.store.List(ctx, record.ServicesPrefix)
	if err != nil {
		return nil, err
	}
	cs, err := o.serviceContainers(ctx, "")
	if err != nil {
		return nil, err
	}
	type key struct{ volume, machine string }
	rows := map[key]*api.VolumeInfo{}
	for _, r := range recs {
		svc, ok := r.(*record.Service)
		if !ok {
			continue
		}
		var spec runtime.ContainerSpec
		if json.Unmarshal(svc.Spec, &spec) != nil || len(spec.NamedVolumes()) == 0 {
			continue
		}
		count := map[string]int{}
		for _, c := range cs {
			if c.Service == svc.Name {
				count[c.MachineID]++
			}
		}
		machines := slices.Clone(svc.VolumeMachines)
		for id := range count {
			if !slices.Contains(machines, id) {
				machines = append(machines, id)
			}
		}
		for _, id := range machines {
			for _, v := range spec.NamedVolumes() {
				k := key{v, id}
				row := rows[k]
				if row == nil {
					name := names[id]
					if name == "" {
						name = id // removed machine
					}
					row = &api.VolumeInfo{Name: v, Machine: name, MachineID: id, Driver: "local"}
					rows[k] = row
				}
				if !slices.Contains(row.Services, svc.Name) {
					row.Services = append(row.Services, svc.Name)
					row.Containers += count[id]
				}
			}
		}
	}
	out := make([]api.VolumeInfo, 0, len(rows))
	for _, r := range rows {
		slices.Sort(r.Services)
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Machine < out[j].Machine
	})
	return out, nil
}
