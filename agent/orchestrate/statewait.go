package orchestrate

import (
	"context"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
)

// A command reads and acts on this machine's copy of the state, while
// the records it changes are written by the machines that own them and
// reach this copy by gossip. These waits close that gap where the next
// step, or the next command given here, must see what was done.

// replicationWait bounds each wait: a slow state must not halt a
// command whose effect Docker has confirmed; it only costs this long.
const replicationWait = 10 * time.Second

// untilRecord polls this machine's copy of the state until done holds of
// the container record at key (nil when there is none, or it cannot be
// read), for at most replicationWait. It reports whether done held.
func (o *Orchestrator) untilRecord(ctx context.Context, key string, done func(*record.Container) bool) bool {
	ctx, cancel := context.WithTimeout(ctx, replicationWait)
	defer cancel()
	for {
		var rc *record.Container
		if r, err := o.store.Get(ctx, key); err == nil {
			rc, _ = r.(*record.Container)
		}
		if done(rc) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitServing waits, before the container c replaces goes, until the
// replicated state says c serves: the ingress and DNS route by the state,
// not by Docker, so a container healthy in Docker but not yet in the
// state would leave the routes with none to send to. The other machines'
// copies follow this one within gossip's latency (tens of milliseconds),
// and the ingress tries another backend meanwhile.
func (o *Orchestrator) waitServing(ctx context.Context, c *record.Container) {
	if !o.untilRecord(ctx, c.Key(), func(rc *record.Container) bool { return rc != nil && rc.Serves() }) {
		o.log.Warn("rollout goes on: the new container is healthy but the state does not say so yet", "container", c.Name)
	}
}

// waitForgotten waits until this machine's copy of the state no longer
// records c, which its machine removed: the next command given here (a
// scale right after a scale) must count what is, not containers already
// gone.
func (o *Orchestrator) waitForgotten(ctx context.Context, c *record.Container) {
	if !o.untilRecord(ctx, c.Key(), func(rc *record.Container) bool { return rc == nil }) {
		o.log.Warn("the state here still records a removed container", "container", c.Name)
	}
}
