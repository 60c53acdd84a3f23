package orchestrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/record"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// `uncloud image ls|rm|prune`: each asks every target machine's Docker
// at once and says per machine how it went. Which containers use an
// image is each machine's own answer (its Docker), not the state's, so
// a container the state has not heard of yet still protects its image.

// ImageEngine is the images of one machine's Docker, as the image
// commands use them: this machine's runtime when m is self, the machine
// API of m otherwise. The agent's Engine implements it too; it is an
// interface of its own so that Engine (and its fakes) stay as they are.
type ImageEngine interface {
	ListImages(ctx context.Context, m Machine) (runtime.ImageList, error)
	// RemoveImage removes ref on m; errors wrap runtime.ErrImageNotFound
	// when m has no such image, runtime.ErrImageInUse (or
	// runtime.ErrImageRefused) when m refused.
	RemoveImage(ctx context.Context, m Machine, ref string, opts runtime.RemoveImageOptions) (runtime.ImageRemoval, error)
	PruneImages(ctx context.Context, m Machine, opts runtime.PruneOptions) (runtime.PruneReport, error)
}

// Per-machine bounds of the image calls: a machine that does not answer
// in time is named as such, the others' answers still count.
const (
	imageListTimeout   = 30 * time.Second
	imageRemoveTimeout = 5 * time.Minute
	imagePruneTimeout  = 15 * time.Minute
)

var _ api.ImageStoreBackend = (*Orchestrator)(nil)

func (o *Orchestrator) imageEngine() (ImageEngine, error) {
	ie, ok := o.engine.(ImageEngine)
	if !ok {
		return nil, fmt.Errorf("%w: this agent cannot reach machines' images", api.ErrUnavailable)
	}
	return ie, nil
}

// imageTargets are the named machines, or by default every machine that
// may run containers: down ones too, so that they are named as
// unreachable, but not netstack ones (they never run containers).
func (o *Orchestrator) imageTargets(ctx context.Context, names []string) ([]Machine, error) {
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return nil, err
	}
	if len(names) > 0 {
		return pickTargets(all, names)
	}
	var out []Machine
	for _, m := range all {
		if m.Mode != "netstack" {
			out = append(out, m)
		}
	}
	return out, nil
}

// eachMachine calls call for every reachable target at once, each bounded
// by timeout; a target gossip sees down gets its unreachable error.
func eachMachine[T any](ctx context.Context, ts []Machine, timeout time.Duration,
	call func(context.Context, Machine) (T, error)) ([]T, []error) {
	out, errs := make([]T, len(ts)), make([]error, len(ts))
	var wg sync.WaitGroup
	for i, t := range ts {
		if !t.Reachable() {
			errs[i] = t.unreachableErr()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			out[i], errs[i] = call(cctx, t)
		}()
	}
	wg.Wait()
	return out, errs
}

// imageMachine says how t answered: ok, unreachable (down, or the call
// did not get through), or failed with what it said.
func imageMachine(t Machine, err error) api.ImageMachine {
	im := api.ImageMachine{Machine: t.Name, MachineID: t.ID, State: "ok"}
	switch {
	case err == nil:
	case !t.Reachable(), t.State != "self" && errors.Is(err, api.ErrUnavailable),
		errors.Is(err, context.DeadlineExceeded):
		im.State, im.Error = "unreachable", err.Error()
	default:
		im.State, im.Error = "failed", err.Error()
	}
	return im
}

// ListImages implements api.ImageStoreBackend.
func (o *Orchestrator) ListImages(ctx context.Context, req api.ImageListRequest) (api.ImageList, error) {
	ie, err := o.imageEngine()
	if err != nil {
		return api.ImageList{}, err
	}
	ts, err := o.imageTargets(ctx, req.Machines)
	if err != nil {
		return api.ImageList{}, err
	}
	lists, errs := eachMachine(ctx, ts, imageListTimeout, ie.ListImages)
	res := api.ImageList{Images: []api.ImageInfo{}}
	for i, t := range ts {
		im := imageMachine(t, errs[i])
		im.Truncated = lists[i].Truncated
		res.Machines = append(res.Machines, im)
		for _, img := range lists[i].Images {
			res.Images = append(res.Images, imageInfo(t, img))
		}
	}
	sortImageInfos(res.Images)
	return res, nil
}

func imageInfo(t Machine, img runtime.Image) api.ImageInfo {
	info := api.ImageInfo{Machine: t.Name, MachineID: t.ID, ID: img.ID, Tags: img.Tags, Digests: img.Digests,
		Size: img.Size, Created: img.Created, Containers: img.Users, InUse: img.InUse, OtherContainers: img.Others}
	seen := map[string]bool{}
	for _, u := range img.Users {
		if u.Service != "" && !seen[u.Service] {
			seen[u.Service] = true
			info.Services = append(info.Services, u.Service)
		}
	}
	sort.Strings(info.Services)
	return info
}

// sortImageInfos puts one image's rows on the machines next to each
// other: by first name (unnamed last), ID, machine.
func sortImageInfos(is []api.ImageInfo) {
	name := func(i api.ImageInfo) string { return runtime.ImageSortName(i.Tags, i.Digests) }
	sort.SliceStable(is, func(a, b int) bool {
		x, y := is[a], is[b]
		if name(x) != name(y) {
			return name(x) < name(y)
		}
		if x.ID != y.ID {
			return x.ID < y.ID
		}
		return x.Machine < y.Machine
	})
}

// RemoveImage implements api.ImageStoreBackend. It asks every target
// first whether it has the image and whether uncloud containers use it
// there; unless forced, one machine's refusal refuses the whole removal
// before anything is removed anywhere. Then the machines that have it
// remove it, each checking again (a container may have come meanwhile).
func (o *Orchestrator) RemoveImage(ctx context.Context, req api.ImageRemoveRequest) (api.ImageRemoveResult, error) {
	res := api.ImageRemoveResult{Image: req.Image}
	if strings.TrimSpace(req.Image) == "" {
		return res, fmt.Errorf("%w: image rm needs an image (a name, an ID or a digest)", api.ErrBadRequest)
	}
	ie, err := o.imageEngine()
	if err != nil {
		return res, err
	}
	ts, err := o.imageTargets(ctx, req.Machines)
	if err != nil {
		return res, err
	}
	opts := runtime.RemoveImageOptions{Force: req.Force}
	check := opts
	check.Check = true
	_, errs := eachMachine(ctx, ts, imageListTimeout, func(ctx context.Context, t Machine) (runtime.ImageRemoval, error) {
		return ie.RemoveImage(ctx, t, req.Image, check)
	})
	var has []Machine
	var refused, asked []string
	for i, t := range ts {
		asked = append(asked, t.Name)
		switch err := errs[i]; {
		case err == nil:
			has = append(has, t)
		case errors.Is(err, runtime.ErrImageNotFound):
			res.Machines = append(res.Machines, api.ImageRemoved{ImageMachine: api.ImageMachine{Machine: t.Name, MachineID: t.ID, State: "absent"}})
		case errors.Is(err, runtime.ErrImageInUse), errors.Is(err, runtime.ErrImageRefused):
			refused = append(refused, err.Error())
			res.Machines = append(res.Machines, api.ImageRemoved{ImageMachine: api.ImageMachine{Machine: t.Name, MachineID: t.ID, State: "refused", Error: err.Error()}})
		case errors.Is(err, runtime.ErrBadSpec), errors.Is(err, api.ErrBadRequest):
			return res, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		default:
			res.Machines = append(res.Machines, api.ImageRemoved{ImageMachine: imageMachine(t, err)})
		}
	}
	if len(refused) > 0 && !req.Force {
		return res, fmt.Errorf("%w: %s; nothing was removed", api.ErrConflict, strings.Join(refused, "; "))
	}
	if len(has) == 0 && len(refused) == 0 && allAbsent(res.Machines) {
		return res, fmt.Errorf("%w: %q is not in Docker on any machine asked (%s)", api.ErrNotFound, req.Image, strings.Join(asked, ", "))
	}
	removals, errs := eachMachine(ctx, has, imageRemoveTimeout, func(ctx context.Context, t Machine) (runtime.ImageRemoval, error) {
		return ie.RemoveImage(ctx, t, req.Image, opts)
	})
	for i, t := range has {
		r := api.ImageRemoved{ImageMachine: imageMachine(t, errs[i]), ID: removals[i].ID,
			Untagged: removals[i].Untagged, Deleted: removals[i].Deleted}
		switch err := errs[i]; {
		case err == nil:
			r.State = "removed"
		case errors.Is(err, runtime.ErrImageNotFound):
			r.State, r.Error = "absent", ""
		case errors.Is(err, runtime.ErrImageInUse), errors.Is(err, runtime.ErrImageRefused):
			r.State = "refused"
		}
		res.Machines = append(res.Machines, r)
	}
	sort.Slice(res.Machines, func(a, b int) bool { return res.Machines[a].Machine < res.Machines[b].Machine })
	return res, nil
}

func allAbsent(ms []api.ImageRemoved) bool {
	for _, m := range ms {
		if m.State != "absent" {
			return false
		}
	}
	return true
}

// PruneImages implements api.ImageStoreBackend: each target removes what
// no container there uses (runtime.PruneImages).
func (o *Orchestrator) PruneImages(ctx context.Context, req api.ImagePruneRequest) (api.ImagePruneResult, error) {
	res := api.ImagePruneResult{DryRun: req.DryRun}
	ie, err := o.imageEngine()
	if err != nil {
		return res, err
	}
	ts, err := o.imageTargets(ctx, req.Machines)
	if err != nil {
		return res, err
	}
	keep, err := o.servicePins(ctx)
	if err != nil {
		return res, err
	}
	opts := runtime.PruneOptions{All: req.All, DryRun: req.DryRun, Keep: keep}
	reps, errs := eachMachine(ctx, ts, imagePruneTimeout, func(ctx context.Context, t Machine) (runtime.PruneReport, error) {
		return ie.PruneImages(ctx, t, opts)
	})
	for i, t := range ts {
		res.Machines = append(res.Machines, api.ImagePruned{ImageMachine: imageMachine(t, errs[i]),
			Removed: reps[i].Removed, Count: reps[i].Count, Failed: reps[i].Failed, Reclaimed: reps[i].Reclaimed})
	}
	return res, nil
}

// servicePins are the images the network's services are pinned to: a
// prune keeps them wherever they are.
func (o *Orchestrator) servicePins(ctx context.Context) ([]string, error) {
	recs, err := o.store.List(ctx, record.ServicesPrefix)
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	var out []string
	for _, r := range recs {
		svc, ok := r.(*record.Service)
		if !ok {
			continue
		}
		var spec runtime.ContainerSpec
		if json.Unmarshal(svc.Spec, &spec) == nil && spec.ImagePin != "" && len(out) < runtime.MaxPruneKeep {
			out = append(out, spec.ImagePin)
		}
	}
	return out, nil
}
