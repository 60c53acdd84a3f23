package agent

import (
	"context"
	"slices"
	"time"

	"github.com/uncloud-mesh/uncloud/agent/membership"
	"github.com/uncloud-mesh/uncloud/gossip"
)

// Catching up on a machine gossip knows before its record.
//
// Gossip's membership spreads faster than the records: a machine that
// just joined is soon alive in every member list, while its record
// travels as a head announcement that a machine can miss (it joined at
// the same moment, or the newcomer's own packets cannot reach it: with no
// record there is no WireGuard peer). Anti-entropy repairs a miss only at
// the next push/pull (every 20 s, with a random member that may be the
// newcomer itself) or rebroadcast (30 s). Until then this machine cannot
// reach the newcomer at all. So when a live member has no record here,
// the agent asks another member for its whole state at once: a gossip
// join is a push/pull, and it carries the store's heads.

// catchUpEvery is how often the member list is compared with the known
// machines; it costs a map lookup per member when nothing is missing.
const catchUpEvery = 2 * time.Second

func (d *Daemon) startCatchUp(ctx context.Context) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		t := time.NewTicker(catchUpEvery)
		defer t.Stop()
		turn := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			known := d.members.Known(ctx)
			unknown, ask := catchUpPlan(d.gossip.Members(), known, d.state.MachineID, turn)
			if len(unknown) == 0 || ask == "" {
				continue
			}
			revoked := d.members.Revoked(ctx)
			if !slices.ContainsFunc(unknown, func(id string) bool { return revoked[id] == nil }) {
				continue // removed machines still in gossip: nothing to learn
			}
			turn++
			d.log.Debug("live members without a record here; pulling the state", "members", unknown, "from", ask)
			if _, err := d.gossip.Join(ctx, []string{ask}); err != nil && ctx.Err() == nil {
				d.log.Debug("state pull for unknown members", "from", ask, "err", err)
			}
		}
	}()
}

// catchUpPlan returns the live members (by machine ID) that have no
// record or seed here, and the gossip address of a known live member to
// pull the state from: a different one each turn, so one that cannot
// help is not asked forever.
func catchUpPlan(alive []gossip.Member, known []membership.Known, self string, turn int) (unknown []string, ask string) {
	isKnown := make(map[string]bool, len(known))
	for _, k := range known {
		isKnown[k.ID] = true
	}
	var helpers []string
	for _, m := range alive {
		switch {
		case m.Name == self || m.State != gossip.Alive:
		case isKnown[m.Name]:
			helpers = append(helpers, m.Addr.String())
		default:
			unknown = append(unknown, m.Name)
		}
	}
	if len(unknown) == 0 || len(helpers) == 0 {
		return unknown, ""
	}
	slices.Sort(helpers)
	return unknown, helpers[turn%len(helpers)]
}
