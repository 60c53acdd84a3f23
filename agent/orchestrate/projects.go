package orchestrate

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
)

// Projects: a service's ID is "<name>.<project>", or its bare name in the
// default project (record.ServiceID). Commands take either the ID or,
// where only one project has a service of that name, the bare name.

// serviceID resolves what a user typed to a service ID: the ID itself
// when a service or container has it, else the one service of that
// name in any project. Several projects with the name make an error that
// lists them; no service at all leaves the name as typed, so the caller
// says it is not found in its own words.
func (o *Orchestrator) serviceID(ctx context.Context, typed string) (string, error) {
	ids, err := o.serviceIDs(ctx)
	if err != nil {
		return "", err
	}
	if ids[typed] {
		return typed, nil
	}
	if strings.Contains(typed, ".") {
		name, project := record.SplitServiceID(typed)
		if project == record.DefaultProject && ids[name] {
			return name, nil // web.default is web
		}
		return typed, nil
	}
	var found []string
	for id := range ids {
		if name, _ := record.SplitServiceID(id); name == typed {
			found = append(found, id)
		}
	}
	switch len(found) {
	case 0:
		return typed, nil
	case 1:
		return found[0], nil
	}
	slices.Sort(found)
	return "", fmt.Errorf("%w: %d projects have a service %q: say which, e.g. %s", api.ErrConflict, len(found), typed, strings.Join(found, ", "))
}

// serviceIDs are the IDs of every service with a record or a container.
func (o *Orchestrator) serviceIDs(ctx context.Context) (map[string]bool, error) {
	v, err := o.readState(ctx)
	if err != nil {
		return nil, err
	}
	return v.serviceIDs(), nil
}

// projectServices are the IDs of the services of project.
func (o *Orchestrator) projectServices(ctx context.Context, project string) ([]string, error) {
	v, err := o.readState(ctx)
	if err != nil {
		return nil, err
	}
	return v.projectServices(project), nil
}

// qualify turns a deploy's services, named within their project, into
// service IDs: their names, what they depend on, and the services their
// security groups name when those are of the same deploy (a name the
// project does not have is another project's ID, or the default
// project's).
func qualify(req *api.DeployRequest) error {
	// The caller's request stays as it was (a retry sends it again).
	req.Services = slices.Clone(req.Services)
	project := ""
	ours := map[string]bool{}
	for i := range req.Services {
		s := &req.Services[i]
		if s.Project != "" && s.Project != record.DefaultProject {
			if err := record.CheckProjectName(s.Project); err != nil {
				return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
			}
		}
		if project == "" {
			project = s.Project
		} else if s.Project != project {
			return fmt.Errorf("%w: one deploy is one project: services of %q and %q", api.ErrBadRequest, project, s.Project)
		}
		if s.Name == "" {
			s.Name = serviceNameFromImage(s.Image)
		}
		if strings.Contains(s.Name, ".") {
			return fmt.Errorf("%w: service name %q: a name has no dot (the project is given apart)", api.ErrBadRequest, s.Name)
		}
		ours[s.Name] = true
	}
	id := func(name string) string { return record.ServiceID(name, project) }
	for i := range req.Services {
		s := &req.Services[i]
		s.Name = id(s.Name)
		if err := record.CheckServiceID(s.Name); err != nil {
			return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		if len(s.DependsOn) > 0 {
			deps := map[string]string{}
			for dep, cond := range s.DependsOn {
				deps[id(dep)] = cond
			}
			s.DependsOn = deps
		}
		s.AllowFrom = slices.Clone(s.AllowFrom)
		for j, a := range s.AllowFrom {
			kind, name, _ := strings.Cut(a, ":")
			switch {
			case !strings.Contains(a, ":") && ours[a]:
				s.AllowFrom[j] = id(a)
			case kind == string(record.AllowService) && ours[name]:
				s.AllowFrom[j] = kind + ":" + id(name)
			}
		}
	}
	return nil
}

// orphans are the services of the deploy's project that it does not
// name, in the deploy's view of the state. The default project has none:
// it holds what 'uncloud run' made, which no Compose file names.
func orphans(state *stateView, req api.DeployRequest) ([]string, error) {
	project := record.ServiceProject(req.Services[0].Name)
	if project == record.DefaultProject {
		if req.RemoveOrphans {
			return nil, fmt.Errorf("%w: --remove-orphans: the default project holds the services 'uncloud run' made, which no Compose file names; deploy with -p NAME", api.ErrBadRequest)
		}
		return nil, nil
	}
	ids := state.projectServices(project)
	named := map[string]bool{}
	for _, s := range req.Services {
		named[s.Name] = true
	}
	var out []string
	for _, id := range ids {
		if !named[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// removeOrphans removes the orphans once the rest of the deploy is done,
// so what replaces them runs first.
func (o *Orchestrator) removeOrphans(ctx context.Context, orphans []string, event func(api.DeployEvent) error) error {
	var failed []string
	for _, id := range orphans {
		res, err := o.RemoveService(ctx, id)
		for _, c := range res.Containers {
			_ = event(api.DeployEvent{Service: id, Machine: c.Machine, Container: c.Name, Action: cmpAction(c.Error, "removed"), Detail: c.Error})
		}
		if err == nil && res.Failed() > 0 {
			err = fmt.Errorf("%d of %d containers not removed", res.Failed(), len(res.Containers))
		}
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", id, err))
			continue
		}
		_ = event(api.DeployEvent{Service: id, Action: "removed", Detail: "orphan"})
	}
	if len(failed) > 0 {
		return fmt.Errorf("orphans not removed: %s", strings.Join(failed, "; "))
	}
	return nil
}

// cmpAction is action, or "failed" when there is an error.
func cmpAction(err, action string) string {
	if err != "" {
		return "failed"
	}
	return action
}
