package orchestrate

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// A deploy makes the services of a Compose file true: new services are
// created, changed ones rolled out as their update_config says
// (rollout.go), size changes scale. A changed spec is a new version in
// the service's history (history.go).

// servicePlan is what a deploy does to one service.
type servicePlan struct {
	name     string
	mode     string
	spec     runtime.ContainerSpec
	specJSON []byte
	exists   bool
	create   []Machine           // new containers, by machine
	replace  []*record.Container // old containers replaced start-first on their machine
	remove   []*record.Container // scale down
	same     int                 // containers left as they are
	// allowFrom is the security group wanted; oldAllow the record's.
	allowFrom, oldAllow []string
	// job gets the pinned image onto the machines that need it.
	job imageJob
	// update is how the rollout goes; oldSpec is the spec being replaced
	// (what a rollback restores), oldSpecJSON as stored.
	update      *record.UpdateConfig
	oldSpec     runtime.ContainerSpec
	oldSpecJSON []byte
	// created are the containers this deploy added (scale-up), which a
	// rollback removes.
	created []*record.Container
	// version is what the history says of this deploy when it changes
	// the spec.
	version record.Version
}

// Deploy implements api.DeployBackend.
func (o *Orchestrator) Deploy(ctx context.Context, req api.DeployRequest, event func(api.DeployEvent) error) error {
	if len(req.Services) == 0 {
		return fmt.Errorf("%w: no services to deploy", api.ErrBadRequest)
	}
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return err
	}
	names := indexByID(all)
	event = lockedEvents(event)
	if err := qualify(&req); err != nil {
		return err
	}
	// Every service is planned from one read of the state.
	state, err := o.readState(ctx)
	if err != nil {
		return err
	}
	orphans, err := orphans(state, req)
	if err != nil {
		return err
	}
	var plans []*servicePlan
	deps := map[string]map[string]string{}
	planned := newPlannedDeploy(state) // for the next services' spread and shared volumes
	for _, s := range req.Services {
		service := cmp.Or(s.Name, serviceNameFromImage(s.Image))
		if len(s.DependsOn) > 0 {
			deps[service] = s.DependsOn
		}
		imageEvent := func(u api.ImageProgress) {
			_ = event(api.DeployEvent{Service: service, Action: "image", Machine: u.Machine, Image: &u})
		}
		auth, err := authFor(req.RegistryAuths, s.Image)
		if err != nil {
			return err
		}
		job, err := newImageJob(s.Image, s.Pull, auth, imageEvent)
		if err != nil {
			return fmt.Errorf("service %s: %w", s.Name, err)
		}
		p, err := o.planService(ctx, all, s, job, "", req.DryRun, planned)
		if err != nil {
			return err
		}
		planned.add(p.spec, p.create)
		p.version = record.Version{Action: "deploy", User: cmp.Or(s.By, req.By)}
		plans = append(plans, p)
	}
	if plans, err = o.orderPlans(ctx, plans, deps); err != nil {
		return err
	}
	for _, p := range plans {
		for _, e := range p.events(names) {
			if err := event(e); err != nil {
				return err
			}
		}
	}
	for _, id := range orphans {
		e := api.DeployEvent{Plan: true, Service: id, Action: "orphan",
			Detail: "in the project, not in the files: 'deploy --remove-orphans' removes it"}
		if req.RemoveOrphans {
			e.Action, e.Detail = "remove", "orphan: in the project, not in the files"
		}
		if err := event(e); err != nil {
			return err
		}
	}
	if req.DryRun {
		return nil
	}
	if err := o.applyPlans(ctx, plans, deps, names, event); err != nil {
		return err
	}
	if req.RemoveOrphans {
		return o.removeOrphans(ctx, orphans, event)
	}
	return nil
}

// applyPlans applies the plans at once, as docker compose starts
// independent services at once: each waits only for the services it
// depends on, first for this deploy to have applied them, then for the
// condition depends_on names. A failed plan fails those that depend on
// it, and none other.
func (o *Orchestrator) applyPlans(ctx context.Context, plans []*servicePlan, deps map[string]map[string]string,
	names map[string]Machine, event func(api.DeployEvent) error) error {
	done := map[string]chan struct{}{}
	for _, p := range plans {
		done[p.name] = make(chan struct{})
	}
	var mu sync.Mutex
	failed := map[string]bool{}
	errs := make([]error, len(plans))
	var wg sync.WaitGroup
	for i, p := range plans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[p.name])
			fail := func(err error) {
				errs[i] = err
				mu.Lock()
				failed[p.name] = true
				mu.Unlock()
			}
			for _, dep := range slices.Sorted(maps.Keys(deps[p.name])) {
				ch := done[dep]
				if ch == nil {
					continue // not in this deploy: waitDependencies looks at it as it is
				}
				select {
				case <-ch:
				case <-ctx.Done():
					fail(ctx.Err())
					return
				}
				mu.Lock()
				bad := failed[dep]
				mu.Unlock()
				if bad {
					fail(fmt.Errorf("deploy of %s not started: its dependency %s failed", p.name, dep))
					return
				}
			}
			emit := func(e api.DeployEvent) { e.Service = p.name; _ = event(e) }
			if err := o.waitDependencies(ctx, p.name, deps[p.name], emit); err != nil {
				fail(err)
				return
			}
			held := o.volumeMachines(ctx, p.name)
			err := o.applyPlan(ctx, p, names, event)
			o.noteVolumes(ctx, p.name, held...)
			if err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// lockedEvents makes event safe to call from several goroutines (pulls,
// and a rollout's batches, report at once), one call at a time.
func lockedEvents(event func(api.DeployEvent) error) func(api.DeployEvent) error {
	var mu sync.Mutex
	return func(e api.DeployEvent) error {
		mu.Lock()
		defer mu.Unlock()
		return event(e)
	}
}

// events are the plan's lines.
func (p *servicePlan) events(names map[string]Machine) []api.DeployEvent {
	var out []api.DeployEvent
	for _, t := range p.create {
		out = append(out, api.DeployEvent{Plan: true, Service: p.name, Machine: t.Name, Action: "create"})
	}
	for _, c := range p.replace {
		out = append(out, api.DeployEvent{Plan: true, Service: p.name, Machine: machineName(names, c.MachineID),
			Container: c.Name, Action: "replace"})
	}
	for _, c := range p.remove {
		out = append(out, api.DeployEvent{Plan: true, Service: p.name, Machine: machineName(names, c.MachineID),
			Container: c.Name, Action: "remove"})
	}
	if len(out) == 0 {
		out = append(out, api.DeployEvent{Plan: true, Service: p.name, Action: "unchanged",
			Detail: fmt.Sprintf("%d containers", p.same)})
	}
	if p.exists && !slices.Equal(p.allowFrom, p.oldAllow) {
		detail := strings.Join(p.allowFrom, ",")
		if detail == "" {
			detail = "open to the network"
		}
		out = append(out, api.DeployEvent{Plan: true, Service: p.name, Action: "allow-from", Detail: detail})
	}
	return out
}

// machineID is the ID of the machine named name.
func machineID(names map[string]Machine, name string) string {
	for id, t := range names {
		if t.Name == name {
			return id
		}
	}
	return name
}

func machineName(names map[string]Machine, id string) string {
	if t, ok := names[id]; ok {
		return t.Name
	}
	return id
}

// planService plans one service; pin, when set, is the image to run as is
// (a rollback's), else the image is resolved again. A dry run seals
// nothing new into the state.
func (o *Orchestrator) planService(ctx context.Context, all []Machine, s api.RunRequest, job imageJob, pin string, dryRun bool,
	planned *plannedDeploy) (*servicePlan, error) {
	if s.Name == "" {
		s.Name = serviceNameFromImage(s.Image)
	}
	if s.Mode == "" {
		s.Mode = "replicated"
	}
	if s.Mode != "replicated" && s.Mode != "global" {
		return nil, fmt.Errorf("%w: service %s: mode %q is not replicated or global", api.ErrBadRequest, s.Name, s.Mode)
	}
	if s.Replicas == 0 && s.Mode == "replicated" {
		s.Replicas = 1
	}
	spec, err := specFromRequest(s)
	if err != nil {
		return nil, err
	}
	if err := s.Update.Check(); err != nil {
		return nil, fmt.Errorf("%w: service %s: %v", api.ErrBadRequest, s.Name, err)
	}
	_, allowFrom, err := record.ParseAllowFromList(s.AllowFrom)
	if err != nil {
		return nil, fmt.Errorf("%w: service %s: %v", api.ErrBadRequest, s.Name, err)
	}
	targets, err := o.placeTargets(ctx, all, s.Machines)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", s.Name, err)
	}
	// A deploy re-resolves the tag (unless the policy is never): a tag
	// that moved makes a changed spec, so the service rolls to it.
	if pin == "" {
		pinned, err := o.pin(ctx, job, targets, job.policy != runtime.PullNever)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
		pin = pinned.Pin
	}
	spec.ImagePin = pin
	var oldSpec []byte
	svc, svcErr := o.service(ctx, s.Name)
	if svcErr == nil {
		oldSpec = svc.Spec
	}
	if err := o.sealSpec(ctx, &spec, s, oldSpec, dryRun); err != nil {
		return nil, fmt.Errorf("service %s: %w", s.Name, err)
	}
	specJSON, _ := json.Marshal(spec)
	p := &servicePlan{name: s.Name, mode: s.Mode, spec: spec, specJSON: specJSON, allowFrom: allowFrom, job: job, update: s.Update}
	want := s.Replicas
	if s.Mode == "global" {
		want = len(targets)
	}
	state, err := o.stateOf(ctx, planned)
	if err != nil {
		return nil, err
	}
	if planned == nil {
		planned = newPlannedDeploy(state) // placement works from the same view
	}
	cs := state.containersOf(s.Name)
	sort.Slice(cs, func(i, j int) bool {
		if (cs[i].State == "running") != (cs[j].State == "running") {
			return cs[i].State == "running"
		}
		return cs[i].Name < cs[j].Name
	})
	if svcErr == nil {
		p.exists, p.oldSpecJSON, p.oldAllow = true, svc.Spec, svc.AllowFrom
		if err := json.Unmarshal(svc.Spec, &p.oldSpec); err != nil {
			return nil, fmt.Errorf("service %s has no readable spec (made by an older version?): %w", s.Name, err)
		}
	}
	if p.create, want, err = o.planPlacement(ctx, all, targets, spec, cs, want, s.Mode == "global", planned); err != nil {
		return nil, fmt.Errorf("service %s: %w", s.Name, err)
	}
	keep := min(want, len(cs))
	p.remove = cs[keep:]
	// Compared without ciphertext: a re-wrap for other machines is no change.
	if bytes.Equal(runtime.PublicJSON(p.oldSpecJSON), runtime.PublicJSON(specJSON)) {
		p.same = keep
	} else {
		p.replace = cs[:keep]
	}
	return p, nil
}

// applyPlan carries a plan out; event must be safe for concurrent calls
// (lockedEvents).
func (o *Orchestrator) applyPlan(ctx context.Context, p *servicePlan, names map[string]Machine, event func(api.DeployEvent) error) error {
	svc := &record.Service{Name: p.name, Mode: p.mode, Ports: p.spec.Ports, Spec: p.specJSON, AllowFrom: p.allowFrom, Update: p.update}
	if !p.exists {
		if err := o.store.Put(ctx, svc.Key(), svc); err != nil {
			return fmt.Errorf("write service record of %s: %w", p.name, err)
		}
	}
	emit := func(e api.DeployEvent) { e.Service = p.name; _ = event(e) }
	// Every machine that gets a new container has the image first; a
	// failed pull stops the deploy before anything changes. (A machine
	// that cannot be reached is left to the rollout, which stops there.)
	var need []Machine
	for _, t := range p.create {
		if t.Reachable() {
			need = append(need, t)
		}
	}
	for _, old := range p.replace {
		if t, ok := names[old.MachineID]; ok && t.Reachable() {
			need = append(need, t)
		}
	}
	if failed := o.pullOn(ctx, p.job, p.spec.RunImage(), need); len(failed) > 0 {
		var why []string
		for _, t := range uniqueMachines(need) {
			if err := failed[t.ID]; err != nil {
				emit(api.DeployEvent{Machine: t.Name, Action: "failed", Detail: err.Error()})
				why = append(why, err.Error())
			}
		}
		return fmt.Errorf("deploy of %s stopped before any change: the image could not be pulled on %d machines: %s",
			p.name, len(failed), strings.Join(why, "; "))
	}
	res := o.createMany(ctx, p.spec, p.create, nil)
	for _, r := range res.Containers {
		if r.Error != "" {
			emit(api.DeployEvent{Machine: r.Machine, Action: "failed", Detail: r.Error})
		} else {
			emit(api.DeployEvent{Machine: r.Machine, Container: r.Name, Action: "created", Detail: r.Address})
			p.created = append(p.created, &record.Container{ID: r.ID, Name: r.Name, MachineID: machineID(names, r.Machine)})
		}
	}
	if n := res.Failed(); n > 0 {
		return fmt.Errorf("deploy of %s stopped: %d of %d new containers failed", p.name, n, len(res.Containers))
	}
	if err := o.rollout(ctx, p, names, emit); err != nil {
		return err
	}
	var going []drainee
	for _, c := range p.remove {
		if t, ok := names[c.MachineID]; ok && t.Reachable() {
			going = append(going, drainee{t, c})
		}
	}
	o.drain(ctx, going...)
	rm := o.actMany(ctx, p.name, "remove", p.remove)
	for _, r := range rm.Containers {
		if r.Error != "" {
			emit(api.DeployEvent{Machine: r.Machine, Container: r.Name, Action: "failed", Detail: r.Error})
		} else {
			emit(api.DeployEvent{Machine: r.Machine, Container: r.Name, Action: "removed"})
		}
	}
	if p.exists {
		if err := o.store.Put(ctx, svc.Key(), svc); err != nil {
			return fmt.Errorf("write service record of %s: %w", p.name, err)
		}
	}
	if !bytes.Equal(p.oldSpecJSON, p.specJSON) {
		o.addVersion(ctx, svc, p.oldSpecJSON, p.version, names)
	}
	emit(api.DeployEvent{Action: "done"})
	if n := rm.Failed(); n > 0 {
		return fmt.Errorf("deploy of %s: %d containers could not be removed", p.name, n)
	}
	return nil
}

// authFor is the credentials a deploy carries for image's registry.
func authFor(auths map[string]api.RegistryAuth, image string) (*api.RegistryAuth, error) {
	if len(auths) == 0 {
		return nil, nil
	}
	host, err := api.RegistryHost(image)
	if err != nil {
		return nil, err
	}
	if a, ok := auths[host]; ok {
		return &a, nil
	}
	return nil, nil
}
