package orchestrate

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// History: each run or deploy that changes a service's spec adds a
// version to the service's history record (the last record.HistoryKeep),
// and a rollback deploys one of them again, as a normal rollout.

// history is the service's history record; an empty one when it has none.
func (o *Orchestrator) history(ctx context.Context, service string) (*record.History, error) {
	r, err := o.store.Get(ctx, record.HistoryPrefix+service)
	if errors.Is(err, crdt.ErrNotFound) {
		return &record.History{Service: service}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read history of %s: %w", service, err)
	}
	h, ok := r.(*record.History)
	if !ok {
		return nil, fmt.Errorf("record %s is not a history", r.Key())
	}
	return h, nil
}

// addVersion records svc's spec as the newest version. A service from
// before histories gets its previous spec recorded first, so it can be
// rolled back to. A failure is logged, not returned: the deploy happened.
func (o *Orchestrator) addVersion(ctx context.Context, svc *record.Service, prevSpec []byte, v record.Version, names map[string]Machine) {
	h, err := o.history(ctx, svc.Name)
	if err != nil {
		o.log.Warn("version not recorded", "service", svc.Name, "err", err)
		return
	}
	if len(h.Versions) == 0 && len(prevSpec) > 0 {
		h.Add(versionOf(prevSpec, record.Version{Action: "deploy"}))
	}
	for _, t := range names {
		if t.State == "self" {
			v.Machine = t.Name
		}
	}
	v.Mode, v.AllowFrom, v.Update = svc.Mode, svc.AllowFrom, svc.Update
	v.Time = time.Now().UTC()
	h.Add(versionOf(svc.Spec, v))
	if err := o.store.Put(ctx, h.Key(), h); err != nil {
		o.log.Warn("version not recorded", "service", svc.Name, "err", err)
	}
}

// versionOf fills a version's spec, image and digest from spec.
func versionOf(specJSON []byte, v record.Version) record.Version {
	var spec runtime.ContainerSpec
	_ = json.Unmarshal(specJSON, &spec)
	v.Spec, v.Image, v.Digest = specJSON, spec.Image, spec.PinDigest()
	return v
}

// History implements api.RolloutBackend.
func (o *Orchestrator) History(ctx context.Context, service string) ([]api.ServiceVersion, error) {
	service, err := o.serviceID(ctx, service)
	if err != nil {
		return nil, err
	}
	h, err := o.history(ctx, service)
	if err != nil {
		return nil, err
	}
	svc, svcErr := o.service(ctx, service)
	if svcErr != nil && len(h.Versions) == 0 {
		return nil, svcErr
	}
	out := []api.ServiceVersion{}
	marked := false // the newest version with the service's spec is current
	for _, v := range h.Versions {
		current := !marked && svc != nil && string(svc.Spec) == string(v.Spec)
		marked = marked || current
		out = append(out, api.ServiceVersion{N: v.N, Time: v.Time, Image: v.Image, Digest: v.Digest,
			Machine: v.Machine, User: v.User, Action: v.Action, RollbackOf: v.RollbackOf, Current: current})
	}
	return out, nil
}

// Rollback implements api.RolloutBackend: the chosen version (default
// the one before the newest) is deployed again with its own pin, as a
// start-first rollout of the same containers, and recorded as a new
// version.
func (o *Orchestrator) Rollback(ctx context.Context, service string, req api.RollbackRequest, event func(api.DeployEvent) error) error {
	service, err := o.serviceID(ctx, service)
	if err != nil {
		return err
	}
	event = lockedEvents(event)
	svc, err := o.service(ctx, service)
	if err != nil {
		return err
	}
	h, err := o.history(ctx, service)
	if err != nil {
		return err
	}
	if len(h.Versions) < 2 && req.To == 0 {
		return fmt.Errorf("%w: service %s has no previous version in its history (see 'uncloud history %s')", api.ErrBadRequest, service, service)
	}
	to := req.To
	if to == 0 {
		to = h.Versions[1].N
	}
	v, ok := h.Find(to)
	if !ok {
		return fmt.Errorf("%w: service %s has no version %d (the history keeps the last %d; see 'uncloud history %s')",
			api.ErrBadRequest, service, to, record.HistoryKeep, service)
	}
	var spec runtime.ContainerSpec
	if err := json.Unmarshal(v.Spec, &spec); err != nil {
		return fmt.Errorf("version %d of %s has no readable spec: %w", to, service, err)
	}
	cs, err := o.serviceContainers(ctx, service)
	if err != nil {
		return err
	}
	run := requestOf(spec)
	run.Name, run.Mode, run.Replicas, run.AllowFrom, run.Update = service, cmp.Or(svc.Mode, v.Mode), max(len(cs), 1), v.AllowFrom, v.Update
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return err
	}
	names := indexByID(all)
	job, err := newImageJob(spec.Image, string(runtime.PullMissing), nil, func(u api.ImageProgress) {
		_ = event(api.DeployEvent{Service: service, Action: "image", Machine: u.Machine, Image: &u})
	})
	if err != nil {
		return err
	}
	if len(spec.EnvSealed) > 0 {
		// The version's values, opened here to be sealed again for the
		// members of now.
		plain, _, err := o.open(spec.EnvSealed, envAAD(spec.Service, spec.EnvVersion))
		if err != nil {
			return fmt.Errorf("the environment of version %d of %s cannot be opened on this machine: %w", to, service, err)
		}
		if err := json.Unmarshal(plain, &run.Env); err != nil {
			return fmt.Errorf("the environment of version %d of %s: %w", to, service, err)
		}
	}
	p, err := o.planService(ctx, all, run, job, spec.ImagePin, false, nil)
	if err != nil {
		return err
	}
	if err := o.wholeVersion(ctx, p, spec); err != nil {
		return err
	}
	p.version = record.Version{Action: "rollback", RollbackOf: to, User: req.By}
	for _, e := range p.events(names) {
		if err := event(e); err != nil {
			return err
		}
	}
	return o.applyPlan(ctx, p, names, event)
}

// wholeVersion makes a rollback's plan run the version's spec whole: every
// key and mounted file it had, with its environment as just sealed again.
func (o *Orchestrator) wholeVersion(ctx context.Context, p *servicePlan, version runtime.ContainerSpec) error {
	full := version
	full.Env, full.EnvNames, full.EnvVersion, full.EnvSealed = p.spec.Env, p.spec.EnvNames, p.spec.EnvVersion, p.spec.EnvSealed
	full.ImagePin = p.spec.ImagePin
	if err := full.Validate(); err != nil {
		return fmt.Errorf("%w: the version's spec: %v", api.ErrBadRequest, err)
	}
	p.spec = full
	p.specJSON, _ = json.Marshal(full)
	keep := p.same + len(p.replace)
	if bytes.Equal(runtime.PublicJSON(p.oldSpecJSON), runtime.PublicJSON(p.specJSON)) {
		p.same, p.replace = keep, nil
		return nil
	}
	if len(p.replace) == keep {
		return nil
	}
	cs, err := o.serviceContainers(ctx, p.name)
	if err != nil {
		return err
	}
	sort.Slice(cs, func(i, j int) bool {
		if (cs[i].State == "running") != (cs[j].State == "running") {
			return cs[i].State == "running"
		}
		return cs[i].Name < cs[j].Name
	})
	p.same, p.replace = 0, cs[:min(keep, len(cs))]
	return nil
}
