package orchestrate

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// A deploy makes the services of a Compose file true: new services are
// created, changed ones replaced container by container start-first (the
// new one runs and is healthy before the old one goes; a new one that
// fails stops the rollout and the old ones stay), size changes scale.

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
	names := map[string]Machine{}
	for _, t := range all {
		names[t.ID] = t
	}
	var eventMu sync.Mutex // pulls report from several goroutines
	var plans []*servicePlan
	for _, s := range req.Services {
		service := cmp.Or(s.Name, serviceNameFromImage(s.Image))
		imageEvent := func(u api.ImageProgress) {
			eventMu.Lock()
			defer eventMu.Unlock()
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
		p, err := o.planService(ctx, all, s, job, req.DryRun)
		if err != nil {
			return err
		}
		plans = append(plans, p)
	}
	for _, p := range plans {
		for _, e := range p.events(names) {
			if err := event(e); err != nil {
				return err
			}
		}
	}
	if req.DryRun {
		return nil
	}
	for _, p := range plans {
		if err := o.applyPlan(ctx, p, names, event); err != nil {
			return err
		}
	}
	return nil
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

func machineName(names map[string]Machine, id string) string {
	if t, ok := names[id]; ok {
		return t.Name
	}
	return id
}

func (o *Orchestrator) planService(ctx context.Context, all []Machine, s api.RunRequest, job imageJob, dryRun bool) (*servicePlan, error) {
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
	spec := runtime.ContainerSpec{Service: s.Name, Image: s.Image, Cmd: s.Cmd, Env: s.Env, Volumes: s.Volumes,
		Ports: s.Ports, Restart: s.Restart, Health: s.Health}
	if err := spec.Validate(); err != nil {
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
	pinned, err := o.pin(ctx, job, targets, job.policy != runtime.PullNever)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", s.Name, err)
	}
	spec.ImagePin = pinned.Pin
	var oldSpec []byte
	svc, svcErr := o.service(ctx, s.Name)
	if svcErr == nil {
		oldSpec = svc.Spec
	}
	if err := o.sealSpec(ctx, &spec, s, oldSpec, dryRun); err != nil {
		return nil, fmt.Errorf("service %s: %w", s.Name, err)
	}
	specJSON, _ := json.Marshal(spec)
	p := &servicePlan{name: s.Name, mode: s.Mode, spec: spec, specJSON: specJSON, allowFrom: allowFrom, job: job}
	want := s.Replicas
	if s.Mode == "global" {
		want = len(targets)
	}
	cs, err := o.serviceContainers(ctx, s.Name)
	if err != nil {
		return nil, err
	}
	sort.Slice(cs, func(i, j int) bool {
		if (cs[i].State == "running") != (cs[j].State == "running") {
			return cs[i].State == "running"
		}
		return cs[i].Name < cs[j].Name
	})
	if svcErr == nil {
		p.exists, p.oldAllow = true, svc.AllowFrom
	}
	byID := map[string]Machine{}
	var ids []string
	for _, t := range targets {
		byID[t.ID] = t
		ids = append(ids, t.ID)
	}
	existing := map[string]int{}
	keep := min(want, len(cs))
	for _, c := range cs[:keep] {
		existing[c.MachineID]++
	}
	for _, id := range spread(ids, existing, want-keep) {
		p.create = append(p.create, byID[id])
	}
	p.remove = cs[keep:]
	// Compared without ciphertext: a re-wrap for other machines is no change.
	if bytes.Equal(runtime.PublicJSON(oldSpec), runtime.PublicJSON(specJSON)) {
		p.same = keep
	} else {
		p.replace = cs[:keep]
	}
	return p, nil
}

func (o *Orchestrator) applyPlan(ctx context.Context, p *servicePlan, names map[string]Machine, event func(api.DeployEvent) error) error {
	svc := &record.Service{Name: p.name, Mode: p.mode, Ports: p.spec.Ports, Spec: p.specJSON, AllowFrom: p.allowFrom}
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
		}
	}
	if n := res.Failed(); n > 0 {
		return fmt.Errorf("deploy of %s stopped: %d of %d new containers failed", p.name, n, len(res.Containers))
	}
	for _, old := range p.replace {
		t, ok := names[old.MachineID]
		if !ok || !t.Reachable() {
			emit(api.DeployEvent{Machine: machineName(names, old.MachineID), Container: old.Name, Action: "failed",
				Detail: "machine unreachable: cannot replace this container"})
			return fmt.Errorf("rollout of %s stopped at %s: its machine is unreachable; the old containers keep running", p.name, old.Name)
		}
		c, err := o.create(ctx, t, p.spec)
		if err != nil {
			emit(api.DeployEvent{Machine: t.Name, Action: "failed", Detail: err.Error()})
			return fmt.Errorf("rollout of %s stopped: %w; the old containers keep running", p.name, err)
		}
		emit(api.DeployEvent{Machine: t.Name, Container: c.Name, Action: "created", Detail: "replaces " + old.Name})
		if err := o.waitHealthy(ctx, t, c.ID); err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
			rmErr := o.act(rctx, t, c.ID, "remove")
			cancel()
			detail := err.Error()
			if rmErr != nil {
				detail += fmt.Sprintf(" (and removing it failed: %v)", rmErr)
			}
			emit(api.DeployEvent{Machine: t.Name, Container: c.Name, Action: "failed", Detail: detail})
			return fmt.Errorf("rollout of %s stopped: new container %s on %s %v; the old containers keep running", p.name, c.Name, t.Name, err)
		}
		emit(api.DeployEvent{Machine: t.Name, Container: c.Name, Action: "healthy"})
		if err := o.act(ctx, t, old.ID, "remove"); err != nil {
			emit(api.DeployEvent{Machine: t.Name, Container: old.Name, Action: "failed", Detail: err.Error()})
			return fmt.Errorf("rollout of %s stopped: remove %s: %w", p.name, old.Name, err)
		}
		emit(api.DeployEvent{Machine: t.Name, Container: old.Name, Action: "removed"})
	}
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

// waitHealthy waits until a new container runs and, if it has a health
// check, is healthy; one without a check must still run after the settle
// time (3 s), all within the healthy timeout (90 s).
func (o *Orchestrator) waitHealthy(ctx context.Context, t Machine, id string) error {
	ctx, cancel := context.WithTimeout(ctx, o.healthy)
	defer cancel()
	var runningSince time.Time
	for {
		c, err := o.inspect(ctx, t, id)
		if err != nil {
			return fmt.Errorf("cannot be inspected: %w", err)
		}
		switch {
		case c.State == "exited" || c.State == "dead":
			return fmt.Errorf("exited instead of running")
		case c.Health == "unhealthy":
			return fmt.Errorf("is unhealthy")
		case c.State == "running" && c.Health == "healthy":
			return nil
		case c.State == "running" && c.Health == "":
			if runningSince.IsZero() {
				runningSince = time.Now()
			} else if time.Since(runningSince) >= o.settle {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy within %v (state %s, health %s)", o.healthy, c.State, c.Health)
		case <-time.After(o.poll):
		}
	}
}
