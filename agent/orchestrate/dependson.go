package orchestrate

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// depends_on: a deploy applies its services dependencies first (Compose's
// order), and a service whose dependency must be healthy (or must have
// completed) waits for it before its own containers start.

// The conditions of Compose's depends_on.
const (
	dependStarted   = "service_started"
	dependHealthy   = "service_healthy"
	dependCompleted = "service_completed_successfully"
)

// orderPlans sorts plans so that each comes after the services it depends
// on that this deploy also changes; a cycle, an unknown condition, or a
// dependency that is neither in the deploy nor a service of the network
// is refused before anything changes.
func (o *Orchestrator) orderPlans(ctx context.Context, plans []*servicePlan, deps map[string]map[string]string) ([]*servicePlan, error) {
	byName := map[string]*servicePlan{}
	for _, p := range plans {
		byName[p.name] = p
	}
	for name, ds := range deps {
		for dep, cond := range ds {
			switch cond {
			case "", dependStarted, dependHealthy, dependCompleted:
			default:
				return nil, fmt.Errorf("%w: service %s: depends_on %s: condition %q is not %s, %s or %s",
					api.ErrBadRequest, name, dep, cond, dependStarted, dependHealthy, dependCompleted)
			}
			if byName[dep] != nil {
				continue
			}
			if _, err := o.service(ctx, dep); err != nil {
				return nil, fmt.Errorf("%w: service %s depends on %s, which is neither in this deploy nor a service of the network",
					api.ErrBadRequest, name, dep)
			}
		}
	}
	var out []*servicePlan
	state := map[string]int{} // 1: being visited, 2: done
	var visit func(p *servicePlan, path []string) error
	visit = func(p *servicePlan, path []string) error {
		switch state[p.name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("%w: depends_on makes a cycle: %s", api.ErrBadRequest, strings.Join(append(path, p.name), " -> "))
		}
		state[p.name] = 1
		ds := deps[p.name]
		names := make([]string, 0, len(ds))
		for d := range ds {
			names = append(names, d)
		}
		slices.Sort(names)
		for _, d := range names {
			if q := byName[d]; q != nil {
				if err := visit(q, append(path, p.name)); err != nil {
					return err
				}
			}
		}
		state[p.name] = 2
		out = append(out, p)
		return nil
	}
	for _, p := range plans {
		if err := visit(p, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// waitDependencies waits for what service's dependencies must be before
// it starts: healthy (or running, for a service without a health check),
// or exited, as the condition says.
func (o *Orchestrator) waitDependencies(ctx context.Context, service string, deps map[string]string, emit func(api.DeployEvent)) error {
	names := make([]string, 0, len(deps))
	for d := range deps {
		names = append(names, d)
	}
	slices.Sort(names)
	for _, dep := range names {
		cond := deps[dep]
		if cond == "" || cond == dependStarted {
			continue
		}
		emit(api.DeployEvent{Action: "waiting", Detail: fmt.Sprintf("for %s: %s", dep, cond)})
		if err := o.waitService(ctx, dep, cond); err != nil {
			return fmt.Errorf("deploy of %s stopped: its dependency %s is not %s: %w", service, dep, strings.TrimPrefix(cond, "service_"), err)
		}
	}
	return nil
}

// dependPoll is how often a depends_on wait reads its dependency's
// containers (the local state): it is how late a dependent may start
// after its dependency is healthy, once per level of a depends_on chain;
// at the rollouts' 1 s, a 10-service deploy with a chain of three took
// about a second longer than docker compose. Rollouts keep HealthPoll:
// at 250 ms there, an old container went before the ingress on another
// machine knew its replacement (502s in TestRollback).
const dependPoll = 250 * time.Millisecond

// waitService waits until every container of service meets cond, within
// the healthy timeout.
func (o *Orchestrator) waitService(ctx context.Context, service, cond string) error {
	ctx, cancel := context.WithTimeout(ctx, o.healthy)
	defer cancel()
	var spec runtime.ContainerSpec
	if svc, err := o.service(ctx, service); err == nil {
		_ = json.Unmarshal(svc.Spec, &spec) // unreadable: no health check known
	}
	var runningSince time.Time
	for {
		cs, err := o.serviceContainers(ctx, service)
		if err != nil {
			return err
		}
		ok, why := len(cs) > 0, "it has no container"
		for _, c := range cs {
			switch {
			case cond == dependCompleted && c.State != "exited":
				ok, why = false, fmt.Sprintf("%s is %s", c.Name, c.State)
			case cond == dependHealthy && c.State != "running":
				ok, why = false, fmt.Sprintf("%s is %s", c.Name, c.State)
			case cond == dependHealthy && spec.HealthTest() != nil && c.Health != "healthy":
				ok, why = false, fmt.Sprintf("%s is %s", c.Name, c.Health)
			}
		}
		if ok && cond == dependHealthy && spec.HealthTest() == nil {
			// No health check: running for the settle time counts.
			if runningSince.IsZero() {
				runningSince = time.Now()
			}
			ok = time.Since(runningSince) >= o.settle
		} else if !ok {
			runningSince = time.Time{}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not within %v (%s)", o.healthy, why)
		case <-time.After(min(o.poll, dependPoll)):
		}
	}
}
