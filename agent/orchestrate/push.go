package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Pushes of missing layers only (DESIGN §13, package oci): this machine's
// Docker pushes the image to its agent's loopback registry once, then
// every target that lacks it pulls it from its own agent's registry,
// which fetches from here only the blobs that target's Docker asks for.

// Pusher moves images the registry way. The agent implements it.
type Pusher interface {
	// Stage pushes local image ref into this machine's registry and
	// returns what a target needs to pull it from here.
	Stage(ctx context.Context, ref string) (api.ImagePullFrom, error)
	// PullFrom has machine t pull a staged image, reporting as it goes.
	PullFrom(ctx context.Context, t Machine, req api.ImagePullFrom, progress func(api.ImageProgress)) error
}

// PushImage implements api.ImageBackend.
func (o *Orchestrator) PushImage(ctx context.Context, req api.PushRequest, progress func(api.ImageProgress) error) error {
	method := req.Method
	if method == "" {
		method = api.PushRegistry
	}
	if method != api.PushRegistry && method != api.PushLoad {
		return fmt.Errorf("%w: push method %q: want %s or %s", api.ErrBadRequest, req.Method, api.PushRegistry, api.PushLoad)
	}
	all, err := o.fleet.Machines(ctx)
	if err != nil {
		return err
	}
	self := Machine{State: "self"} // the engine knows itself even before its record is read
	for _, t := range all {
		if t.State == "self" {
			self = t
		}
	}
	localID, err := o.engine.ImageID(ctx, self, req.Image)
	if err != nil {
		if errors.Is(err, runtime.ErrImageNotFound) {
			return fmt.Errorf("%w: %v", api.ErrNotFound, err)
		}
		return err
	}
	var targets []Machine
	if len(req.Machines) > 0 {
		if targets, err = pickTargets(all, req.Machines); err != nil {
			return err
		}
	} else if targets, err = o.placeTargets(ctx, all, nil); err != nil {
		return err
	}
	var others []Machine
	for _, t := range targets {
		if t.State != "self" {
			others = append(others, t)
		}
	}
	// Progress reports come from several goroutines: one writer at a time.
	var mu sync.Mutex
	report := func(p api.ImageProgress) {
		mu.Lock()
		defer mu.Unlock()
		_ = progress(p)
	}
	if method == api.PushLoad {
		o.pushLoad(ctx, req, self, localID, others, report)
		return nil
	}
	if o.pusher == nil {
		return fmt.Errorf("%w: this agent cannot push through registries; push with --method load", api.ErrUnavailable)
	}
	o.pushRegistry(ctx, req, localID, others, report)
	return nil
}

// pushRegistry stages the image once if any target lacks it, then has
// every such target pull it, all at once.
func (o *Orchestrator) pushRegistry(ctx context.Context, req api.PushRequest, localID string, targets []Machine,
	report func(api.ImageProgress)) {
	failed := func(t Machine, err error) {
		report(api.ImageProgress{Machine: t.Name, Image: req.Image, Status: "failed", Error: err.Error()})
	}
	// Which targets lack it (a target with the same image is skipped; one
	// whose tag names another image is refused unless forced).
	need := make([]bool, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !t.Reachable() {
				failed(t, t.unreachableErr())
				return
			}
			have, err := o.engine.ImageID(ctx, t, req.Image)
			switch {
			case err == nil && have == localID:
				report(api.ImageProgress{Machine: t.Name, Image: req.Image, Status: "present", Digest: localID})
			case err == nil && !req.Force:
				failed(t, fmt.Errorf("%s on %s is another image (%s, this one is %s): push with --force to replace it",
					req.Image, t.Name, runtime.ShortID(have), runtime.ShortID(localID)))
			case err == nil, errors.Is(err, runtime.ErrImageNotFound):
				need[i] = true
				report(api.ImageProgress{Machine: t.Name, Image: req.Image, Status: "resolving"})
			default:
				failed(t, err)
			}
		}()
	}
	wg.Wait()
	var pulls []Machine
	for i, t := range targets {
		if need[i] {
			pulls = append(pulls, t)
		}
	}
	if len(pulls) == 0 {
		return
	}
	staged, err := o.pusher.Stage(ctx, req.Image)
	if err != nil {
		for _, t := range pulls {
			failed(t, fmt.Errorf("staging on this machine: %w", err))
		}
		return
	}
	staged.Force = req.Force
	for _, t := range pulls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			final := false
			err := o.pusher.PullFrom(ctx, t, staged, func(p api.ImageProgress) {
				p.Machine, p.Image = t.Name, req.Image
				final = final || p.Final()
				report(p)
			})
			if err != nil {
				failed(t, err)
			} else if !final {
				failed(t, errors.New("the pull ended without saying how"))
			}
		}()
	}
	wg.Wait()
}
