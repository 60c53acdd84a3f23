package agent

import (
	"context"
	"fmt"

	"github.com/uncloud-mesh/uncloud/agent/orchestrate"
	"github.com/uncloud-mesh/uncloud/api"
)

// pusher is orchestrate's Pusher: staging on this machine's registry, and
// the pull-from call to a target.
type pusher struct{ d *Daemon }

func (p pusher) Stage(ctx context.Context, ref string) (api.ImagePullFrom, error) {
	pr, rt, err := p.d.containers.pushRegistry()
	if err != nil {
		return api.ImagePullFrom{}, err
	}
	return pr.stage(ctx, rt, ref, nil)
}

func (p pusher) PullFrom(ctx context.Context, t orchestrate.Machine, req api.ImagePullFrom, progress func(api.ImageProgress)) error {
	if local(t) {
		return fmt.Errorf("%w: %s is the machine the image is pushed from", api.ErrBadRequest, t.Name)
	}
	if err := p.d.machineAPI.PullFrom(ctx, t.ID, req, progress); err != nil {
		return remoteCallErr(t, err)
	}
	return nil
}

var _ orchestrate.Pusher = pusher{}
