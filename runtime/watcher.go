package runtime

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// Observer is told what the watcher sees of this machine's containers.
// The runtime writes nothing itself: the agent's observer turns reports
// into the state's records. A returned error is logged (Changed, Removed)
// or ends the pass (Containers) and the watcher retries; reports may
// repeat what the observer already knows, so it should skip no-ops.
type Observer interface {
	// Containers is every uncloud container of this machine, after each
	// full pass: one the observer knows that is not in the list is gone.
	Containers(ctx context.Context, all []*Container) error
	// Changed is one container after a Docker event or Report.
	Changed(ctx context.Context, c *Container) error
	// Removed is a container (by the ID or name it was asked for) that no
	// longer exists here, or never was an uncloud container.
	Removed(ctx context.Context, idOrName string) error
}

// WatchOptions tune the watcher.
type WatchOptions struct {
	// Resync is how often everything is re-checked even without events:
	// the network, the firewall rules and every container (default 30 s).
	Resync time.Duration
	// Ready, if set, is called after each successful full pass.
	Ready func()
	// Failed, if set, is called when Docker cannot be reached or set up;
	// the watcher keeps retrying.
	Failed func(error)
}

// Setup makes the machine's network and firewall rules right: the Docker
// network, then the rules (which need the bridge interface to exist to
// mean anything, though iptables accepts them either way).
func (r *Runtime) Setup(ctx context.Context) error {
	if err := r.Connect(ctx); err != nil {
		return err
	}
	if err := r.EnsureNetwork(ctx, r.cfg.Subnet.Prefix(), r.cfg.MTU); err != nil {
		return err
	}
	if err := r.fw.Apply(ctx, r.Rules()); err != nil {
		return fmt.Errorf("host rules for %s: %w", r.cfg.Bridge, err)
	}
	return nil
}

// Rules are the host rules of this machine's bridge.
func (r *Runtime) Rules() Rules {
	return Rules{Subnet: r.cfg.Subnet.Prefix(), Mesh: meshaddr.Mesh(), Bridge: r.cfg.Bridge, Tag: r.cfg.ChainTag,
		MeshInterface: r.cfg.MeshInterface, MTU: r.cfg.MTU}
}

// RemoveRules takes out the host rules the runtime added.
func (r *Runtime) RemoveRules(ctx context.Context) error { return r.fw.Remove(ctx, r.Rules()) }

// Watch keeps the machine set up and reports its containers to obs until
// ctx ends: a full pass at start, then Docker events, a full pass whenever
// the event stream comes back (Docker restarted: its network and rules
// may be gone), and one every Resync. Only this machine's uncloud
// containers are reported.
func (r *Runtime) Watch(ctx context.Context, obs Observer, o WatchOptions) {
	if o.Resync <= 0 {
		o.Resync = 30 * time.Second
	}
	backoff := time.Second
	said := "" // the failure last logged as a warning
	for ctx.Err() == nil {
		start := time.Now()
		err := r.watchOnce(ctx, obs, o)
		if time.Since(start) > time.Minute {
			backoff = time.Second // it worked for a while: retry soon
			said = ""
		}
		if ctx.Err() != nil {
			return
		}
		if o.Failed != nil {
			o.Failed(err)
		}
		// A machine without Docker would otherwise say so every 30 s for
		// ever: a failure is a warning once, its repeats are debug.
		if msg := fmt.Sprint(err); msg != said {
			r.log.Warn("docker watch interrupted; retrying (repeats are logged at debug level)", "err", err, "in", backoff)
			said = msg
		} else {
			r.log.Debug("docker watch interrupted; retrying", "err", err, "in", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (r *Runtime) watchOnce(ctx context.Context, obs Observer, o WatchOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Subscribe before the full pass, so nothing between them is missed.
	msgs, errs := r.docker.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", LabelMachine+"="+r.cfg.MachineID))})
	if err := r.fullPass(ctx, obs); err != nil {
		return err
	}
	if o.Ready != nil {
		o.Ready()
	}
	tick := time.NewTicker(o.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			if err == nil {
				err = errors.New("event stream ended")
			}
			return err
		case m := <-msgs:
			if err := r.Report(ctx, obs, m.Actor.ID); err != nil {
				r.log.Warn("container change not reported", "container", m.Actor.ID, "event", m.Action, "err", err)
			}
		case <-tick.C:
			if err := r.fullPass(ctx, obs); err != nil {
				return err
			}
			if o.Ready != nil {
				o.Ready()
			}
		}
	}
}

// fullPass sets the machine up and reports every container.
func (r *Runtime) fullPass(ctx context.Context, obs Observer) error {
	if err := r.Setup(ctx); err != nil {
		return err
	}
	live, err := r.List(ctx)
	if err != nil {
		return err
	}
	r.pruneFiles(live)
	return obs.Containers(ctx, live)
}

// Report tells obs about one container now (after the agent created,
// stopped or removed it), instead of waiting for its event. A container
// that is not found is reported Removed, and that is no error.
func (r *Runtime) Report(ctx context.Context, obs Observer, idOrName string) error {
	c, err := r.Inspect(ctx, idOrName)
	if errors.Is(err, ErrNotFound) {
		return obs.Removed(ctx, idOrName)
	}
	if err != nil {
		return err
	}
	return obs.Changed(ctx, c)
}
