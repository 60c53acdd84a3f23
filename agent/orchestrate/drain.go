package orchestrate

import (
	"context"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
)

// drainee is a container about to go, and its machine.
type drainee struct {
	m Machine
	c *record.Container
}

// drain takes containers out of the routes before they stop: each one's
// machine marks its record draining (record.Container.Serves), this
// machine's state hears of it, the other machines' ingresses and
// resolvers within gossip's latency, and one grace lets requests already
// sent to them finish. An agent of the previous release has no drain
// action: its containers then go as that release did, on the ingress's
// retries. Rollbacks do not drain the new containers they remove: those
// failed, and serve nothing worth keeping.
func (o *Orchestrator) drain(ctx context.Context, ds ...drainee) {
	var marked []*record.Container
	for _, d := range ds {
		if !d.c.Serves() {
			continue // no route points at it
		}
		if err := o.act(ctx, d.m, d.c.ID, "drain"); err != nil {
			o.log.Info("removing a container without draining it", "container", d.c.Name, "machine", d.m.Name, "err", err)
			continue
		}
		marked = append(marked, d.c)
	}
	if len(marked) == 0 {
		return
	}
	for _, c := range marked {
		if !o.untilRecord(ctx, c.Key(), func(rc *record.Container) bool { return rc == nil || rc.Draining }) {
			o.log.Warn("the state here does not say the container drains yet; it goes anyway", "container", c.Name)
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(o.grace):
	}
}
