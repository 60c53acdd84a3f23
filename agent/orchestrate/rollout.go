package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// A rollout replaces a service's containers in batches of
// update_config.parallelism, start-first (the new container is healthy,
// and stays so for the monitor time, before the old one goes) or
// stop-first (the old one is stopped first, and only removed once the new
// one has passed). A new container that fails its health check, exits, or
// cannot be made fails the rollout, and failure_action says what then:
// rollback restores the previous spec on every machine the rollout
// touched and removes every new container; pause stops there, old and new
// mixed.

// step is one replacement: where, the old container, the new one (nil
// until made) and how far it went.
type step struct {
	machine    Machine
	old, new   *record.Container
	oldStopped bool // stop-first: the old one is stopped, not removed
	oldGone    bool // the old one is removed
	err        error
}

// rollout replaces p.replace; a failure ends in a rollback or a halt.
func (o *Orchestrator) rollout(ctx context.Context, p *servicePlan, names map[string]Machine, emit func(api.DeployEvent)) error {
	u := p.update.Resolved(o.settle)
	if len(fixedBindings(p.spec)) > 0 {
		// Old and new cannot both hold a host port: stop-first.
		u.Order = record.StopFirst
	}
	var steps []*step
	for i := 0; i < len(p.replace); i += u.Parallelism {
		if i > 0 && u.Delay > 0 {
			select {
			case <-ctx.Done():
				return o.onFailure(ctx, p, u, steps, ctx.Err(), names, emit)
			case <-time.After(u.Delay):
			}
		}
		batch := p.replace[i:min(i+u.Parallelism, len(p.replace))]
		done := make([]*step, len(batch))
		var wg sync.WaitGroup
		for j, old := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				done[j] = o.replaceOne(ctx, p, u, names, old, emit)
			}()
		}
		wg.Wait()
		steps = append(steps, done...)
		for _, s := range done {
			if s.err != nil {
				return o.onFailure(ctx, p, u, steps, s.err, names, emit)
			}
		}
	}
	return nil
}

// replaceOne replaces old by a container of p.spec on old's machine.
func (o *Orchestrator) replaceOne(ctx context.Context, p *servicePlan, u record.UpdateConfig, names map[string]Machine,
	old *record.Container, emit func(api.DeployEvent)) *step {
	s := &step{old: old}
	t, ok := names[old.MachineID]
	if !ok || !t.Reachable() {
		emit(api.DeployEvent{Machine: machineName(names, old.MachineID), Container: old.Name, Action: "failed",
			Detail: "machine unreachable: cannot replace this container"})
		s.err = fmt.Errorf("%s's machine %s is unreachable", old.Name, machineName(names, old.MachineID))
		return s
	}
	s.machine = t
	if u.Order == record.StopFirst {
		o.drain(ctx, drainee{t, old})
		if err := o.act(ctx, t, old.ID, "stop"); err != nil {
			emit(api.DeployEvent{Machine: t.Name, Container: old.Name, Action: "failed", Detail: err.Error()})
			s.err = fmt.Errorf("stop %s on %s: %w", old.Name, t.Name, err)
			return s
		}
		s.oldStopped = true
		emit(api.DeployEvent{Machine: t.Name, Container: old.Name, Action: "stopped", Detail: "stop-first"})
	}
	c, err := o.create(ctx, t, p.spec)
	if err != nil {
		emit(api.DeployEvent{Machine: t.Name, Action: "failed", Detail: err.Error()})
		s.err = err
		return s
	}
	s.new = c
	emit(api.DeployEvent{Machine: t.Name, Container: c.Name, Action: "created", Detail: "replaces " + old.Name})
	if err := o.waitHealthy(ctx, t, c.ID, p.spec, u.Monitor); err != nil {
		emit(api.DeployEvent{Machine: t.Name, Container: c.Name, Action: "failed", Detail: err.Error()})
		s.err = fmt.Errorf("new container %s on %s %w", c.Name, t.Name, err)
		return s
	}
	emit(api.DeployEvent{Machine: t.Name, Container: c.Name, Action: "healthy"})
	o.waitServing(ctx, c)
	o.drain(ctx, drainee{t, old})
	if err := o.act(ctx, t, old.ID, "remove"); err != nil {
		emit(api.DeployEvent{Machine: t.Name, Container: old.Name, Action: "failed", Detail: err.Error()})
		s.err = fmt.Errorf("remove %s: %w", old.Name, err)
		return s
	}
	s.oldGone = true
	emit(api.DeployEvent{Machine: t.Name, Container: old.Name, Action: "removed"})
	return s
}

// cleanupCtx is for undoing: the deploy's caller may be gone, the undo
// must still happen.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
}

// onFailure halts (pause) or rolls back after cause.
func (o *Orchestrator) onFailure(ctx context.Context, p *servicePlan, u record.UpdateConfig, steps []*step, cause error,
	names map[string]Machine, emit func(api.DeployEvent)) error {
	if u.FailureAction == record.OnFailurePause {
		for _, s := range steps {
			if s.err != nil {
				o.undoStep(ctx, s, emit)
			}
		}
		return fmt.Errorf("rollout of %s stopped: %w; the old containers keep running", p.name, cause)
	}
	var touched []string
	seen := map[string]bool{}
	for _, s := range steps {
		if n := s.machine.Name; n != "" && !seen[n] {
			seen[n] = true
			touched = append(touched, n)
		}
	}
	for _, c := range p.created {
		if n := machineName(names, c.MachineID); !seen[n] {
			seen[n] = true
			touched = append(touched, n)
		}
	}
	emit(api.DeployEvent{Action: "rollback", Detail: fmt.Sprintf("%v: restoring the previous version on %s",
		cause, strings.Join(touched, ", "))})
	var failed []string
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		failed = append(failed, err.Error())
	}
	// Batches as the rollout went, so the service never has fewer
	// containers than the rollout allowed itself.
	for i := 0; i < len(steps); i += u.Parallelism {
		var wg sync.WaitGroup
		for _, s := range steps[i:min(i+u.Parallelism, len(steps))] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := o.rollbackStep(ctx, p, s, emit); err != nil {
					fail(err)
				}
			}()
		}
		wg.Wait()
	}
	rm := o.actMany(context.WithoutCancel(ctx), p.name, "remove", p.created)
	for _, r := range rm.Containers {
		if r.Error != "" {
			emit(api.DeployEvent{Machine: r.Machine, Container: r.Name, Action: "failed", Detail: "rollback: " + r.Error})
			fail(fmt.Errorf("remove %s on %s: %s", r.Name, r.Machine, r.Error))
		} else {
			emit(api.DeployEvent{Machine: r.Machine, Container: r.Name, Action: "rollback", Detail: "removed (added by this deploy)"})
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("rollout of %s failed (%w) and its rollback is incomplete: %s", p.name, cause, strings.Join(failed, "; "))
	}
	return fmt.Errorf("rollout of %s failed (%w) and rolled back: the previous version runs again on %s",
		p.name, cause, strings.Join(touched, ", "))
}

// undoStep takes back a step whose old container is still there: the
// new one goes, a stopped old one starts again.
func (o *Orchestrator) undoStep(ctx context.Context, s *step, emit func(api.DeployEvent)) error {
	var errs []error
	if s.new != nil {
		if err := o.cleanupAct(ctx, s.machine, s.new, "remove", "removed", "remove: ", emit); err != nil {
			errs = append(errs, fmt.Errorf("remove %s on %s: %w", s.new.Name, s.machine.Name, err))
		}
	}
	if s.oldStopped {
		if err := o.cleanupAct(ctx, s.machine, s.old, "start", "started", "start: ", emit); err != nil {
			errs = append(errs, fmt.Errorf("start %s on %s again: %w", s.old.Name, s.machine.Name, err))
		}
	}
	return errors.Join(errs...)
}

// cleanupAct does action to c on m within a cleanup's time bound (it runs
// on after the deploy's context ends) and emits how it went: done (none
// if "") on success, else "failed" with failDetail and the error.
func (o *Orchestrator) cleanupAct(ctx context.Context, m Machine, c *record.Container, action, done, failDetail string,
	emit func(api.DeployEvent)) error {
	cctx, cancel := cleanupCtx(ctx)
	defer cancel()
	if err := o.act(cctx, m, c.ID, action); err != nil {
		emit(api.DeployEvent{Machine: m.Name, Container: c.Name, Action: "failed", Detail: failDetail + err.Error()})
		return err
	}
	if done != "" {
		emit(api.DeployEvent{Machine: m.Name, Container: c.Name, Action: done})
	}
	return nil
}

// rollbackStep puts the previous version back where s changed it: where
// the old container still exists it is kept (started again if stopped);
// where it was removed, a container of the old spec is made and must be
// healthy before the new one goes.
func (o *Orchestrator) rollbackStep(ctx context.Context, p *servicePlan, s *step, emit func(api.DeployEvent)) error {
	if s.machine.ID == "" {
		return nil // never reached its machine: nothing changed there
	}
	ctx = context.WithoutCancel(ctx)
	if !s.oldGone {
		err := o.undoStep(ctx, s, emit)
		if err == nil {
			detail := "kept " + s.old.Name
			if s.new != nil {
				detail += ", removed " + s.new.Name
			}
			emit(api.DeployEvent{Machine: s.machine.Name, Container: s.old.Name, Action: "rollback", Detail: detail})
		}
		return err
	}
	cctx, cancel := cleanupCtx(ctx)
	c, err := o.create(cctx, s.machine, p.oldSpec)
	cancel()
	if err != nil {
		emit(api.DeployEvent{Machine: s.machine.Name, Action: "failed", Detail: "rollback: " + err.Error()})
		return fmt.Errorf("restore %s on %s: %w", s.old.Name, s.machine.Name, err)
	}
	if err := o.waitHealthy(ctx, s.machine, c.ID, p.oldSpec, 0); err != nil {
		// The new one stays: it passed its checks, the restored one did not.
		emit(api.DeployEvent{Machine: s.machine.Name, Container: c.Name, Action: "failed", Detail: "rollback: " + err.Error()})
		return fmt.Errorf("restored container %s on %s %w (%s stays)", c.Name, s.machine.Name, err, s.new.Name)
	}
	o.waitServing(ctx, c)
	if err := o.cleanupAct(ctx, s.machine, s.new, "remove", "", "rollback: remove: ", emit); err != nil {
		return fmt.Errorf("remove %s on %s: %w", s.new.Name, s.machine.Name, err)
	}
	emit(api.DeployEvent{Machine: s.machine.Name, Container: c.Name, Action: "rollback",
		Detail: fmt.Sprintf("restores %s, removed %s", s.old.Name, s.new.Name)})
	return nil
}

// waitHealthy waits until a new container runs and, if it has a health
// check, is healthy (its start period counts as starting), then watches it
// for monitor: it must keep running and not turn unhealthy. A container
// without a check counts as healthy once seen running. All of it within
// the healthy timeout (90 s), or longer when the check's own timings need
// it.
func (o *Orchestrator) waitHealthy(ctx context.Context, t Machine, id string, spec runtime.ContainerSpec, monitor time.Duration) error {
	limit := o.healthy
	if spec.HealthTest() != nil {
		interval, timeout, retries, start := spec.HealthTimings()
		limit = max(limit, start+time.Duration(retries+1)*(interval+timeout)+o.settle)
	}
	deadline := time.Now().Add(limit)
	ctx, cancel := context.WithTimeout(ctx, limit+monitor+o.poll)
	defer cancel()
	var okSince time.Time
	for {
		c, err := o.inspect(ctx, t, id)
		if err != nil {
			return fmt.Errorf("cannot be inspected: %w", err)
		}
		switch {
		case c.State == "exited" || c.State == "dead" || c.State == "restarting":
			// Restarting: it exited at least once already.
			if !okSince.IsZero() {
				return fmt.Errorf("exited %v after it was healthy", time.Since(okSince).Round(time.Millisecond))
			}
			return fmt.Errorf("exited instead of running")
		case c.Health == "unhealthy":
			if !okSince.IsZero() {
				return fmt.Errorf("turned unhealthy %v after it was healthy", time.Since(okSince).Round(time.Millisecond))
			}
			return fmt.Errorf("is unhealthy")
		case c.State == "running" && (c.Health == "healthy" || c.Health == ""):
			if okSince.IsZero() {
				okSince = time.Now()
			}
			if time.Since(okSince) >= monitor {
				return nil
			}
		}
		wait := o.poll
		if !okSince.IsZero() {
			wait = min(wait, max(monitor-time.Since(okSince), time.Millisecond))
		} else if time.Now().After(deadline) {
			return fmt.Errorf("not healthy within %v (state %s, health %s)", limit, c.State, c.Health)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy within %v (state %s, health %s): %w", limit, c.State, c.Health, ctx.Err())
		case <-time.After(wait):
		}
	}
}
