package orchestrate

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// stateView is the service and container records as one read of the
// state saw them. A plan (a deploy's, an evacuation's, one command's
// placement) works from one view: planning writes neither kind of
// record, and each step of each service reading the whole state again
// listed it 5 times for a deploy of one service, 28 for six.
type stateView struct {
	services   []*record.Service
	containers []*record.Container
}

// readState lists the service and container records once.
func (o *Orchestrator) readState(ctx context.Context) (*stateView, error) {
	recs, err := o.store.List(ctx, record.ServicesPrefix)
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	v := &stateView{}
	for _, r := range recs {
		if s, ok := r.(*record.Service); ok {
			v.services = append(v.services, s)
		}
	}
	if v.containers, err = o.serviceContainers(ctx, ""); err != nil {
		return nil, err
	}
	return v, nil
}

// containersOf are the container records of service, every one when
// service is "".
func (v *stateView) containersOf(service string) []*record.Container {
	if service == "" {
		return slices.Clone(v.containers)
	}
	var out []*record.Container
	for _, c := range v.containers {
		if c.Service == service {
			out = append(out, c)
		}
	}
	return out
}

// serviceIDs are the IDs of every service with a record or a container.
func (v *stateView) serviceIDs() map[string]bool {
	ids := map[string]bool{}
	for _, s := range v.services {
		ids[s.Name] = true
	}
	for _, c := range v.containers {
		if c.Service != "" {
			ids[c.Service] = true
		}
	}
	return ids
}

// projectServices are the IDs of the services of project, sorted.
func (v *stateView) projectServices(project string) []string {
	var out []string
	for id := range v.serviceIDs() {
		if record.ServiceProject(id) == project {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// serviceSpecs are the readable specs of every service, by name.
func (v *stateView) serviceSpecs() map[string]*runtime.ContainerSpec {
	out := map[string]*runtime.ContainerSpec{}
	for _, s := range v.services {
		var spec runtime.ContainerSpec
		if json.Unmarshal(s.Spec, &spec) == nil {
			out[s.Name] = &spec
		}
	}
	return out
}

// stateOf is the view the plan p works from, read now when p has none
// (a plan of one service: a run, a scale).
func (o *Orchestrator) stateOf(ctx context.Context, p *plannedDeploy) (*stateView, error) {
	if p != nil && p.state != nil {
		return p.state, nil
	}
	return o.readState(ctx)
}
