package orchestrate

import (
	"context"

	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// What a deploy does differently for the keys of issue 15: it places new
// containers with the rules of fit.go, and replaces a container that
// publishes host ports stop-first (its successor needs the same ports on
// the same machine).

// planPlacement places a deploy's new containers. want is the number of
// containers the service should have; for a global service it becomes
// the number of machines that may run it. cs are the service's
// containers now, running first: the first min(want, len(cs)) stay.
func (o *Orchestrator) planPlacement(ctx context.Context, all, targets []Machine, spec runtime.ContainerSpec,
	cs []*record.Container, want int, global bool, planned *plannedDeploy) ([]Machine, int, error) {
	if global {
		on, err := o.placeNew(ctx, all, targets, spec, cs, nil, 0, true, planned)
		if err != nil {
			return nil, 0, err
		}
		want = len(on)
	}
	keep := min(want, len(cs))
	kept := map[string]int{}
	for _, c := range cs[:keep] {
		kept[c.MachineID]++
	}
	if want-keep <= 0 {
		return nil, want, nil
	}
	created, err := o.placeNew(ctx, all, targets, spec, cs, kept, want-keep, false, planned)
	return created, want, err
}
