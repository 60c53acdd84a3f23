package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Images for services: before containers are made, the command pins the
// image (one target resolves the tag to a digest, so every replica runs
// the same bytes even if the tag moves), then each target machine pulls
// that pin through its own Docker, in parallel, with the caller's
// credentials for this call only. A machine whose pull fails gets no
// container, and its result names it with the registry's words.

// imageJob is one command's image: what to pull, how, with whose
// credentials, and where its progress goes.
type imageJob struct {
	image    string
	policy   runtime.PullPolicy
	auth     *api.RegistryAuth
	progress func(api.ImageProgress) // nil: nobody listens
}

// newImageJob checks the pull policy.
func newImageJob(image, policy string, auth *api.RegistryAuth, progress func(api.ImageProgress)) (imageJob, error) {
	p, err := runtime.ParsePullPolicy(policy)
	if err != nil {
		return imageJob{}, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	return imageJob{image: image, policy: p, auth: auth, progress: progress}, nil
}

func (j imageJob) report(u api.ImageProgress) {
	if j.progress != nil {
		j.progress(u)
	}
}

// pin resolves the job's image on the first of targets that answers (they
// are in placement order). registryFirst asks the registry even when the
// machine has the image: deploy and --pull always re-resolve a tag.
func (o *Orchestrator) pin(ctx context.Context, j imageJob, targets []Machine, registryFirst bool) (api.ImageResolveAnswer, error) {
	var lastErr error
	for _, t := range uniqueMachines(targets) {
		if !t.Reachable() {
			lastErr = t.unreachableErr()
			continue
		}
		j.report(api.ImageProgress{Machine: t.Name, Image: j.image, Status: "resolving"})
		a, err := o.engine.ResolveImage(ctx, t, api.ImageResolveRequest{Ref: j.image, Policy: string(j.policy),
			RegistryFirst: registryFirst || j.policy == runtime.PullAlways, Auth: j.auth})
		if err != nil {
			j.report(api.ImageProgress{Machine: t.Name, Image: j.image, Status: "failed", Error: err.Error()})
			// A registry's refusal is the answer; only an unreachable
			// machine lets another one try.
			if !isUnavailable(err) {
				return api.ImageResolveAnswer{}, err
			}
			lastErr = err
			continue
		}
		u := api.ImageProgress{Machine: t.Name, Image: j.image, Status: "resolved", Digest: a.Digest, Error: a.Warning}
		if u.Digest == "" {
			u.Digest = a.Pin
		}
		j.report(u)
		return a, nil
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("%w: no machine to resolve it on", api.ErrUnavailable)
	}
	return api.ImageResolveAnswer{}, fmt.Errorf("image %s: %w", j.image, lastErr)
}

// pullOn makes every machine of targets have pin, in parallel; the answer
// maps the ID of each machine whose pull failed to why.
func (o *Orchestrator) pullOn(ctx context.Context, j imageJob, pin string, targets []Machine) map[string]error {
	failed := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, t := range uniqueMachines(targets) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := o.pullOne(ctx, j, pin, t)
			if err != nil {
				j.report(api.ImageProgress{Machine: t.Name, Image: j.image, Status: "failed", Error: err.Error()})
				mu.Lock()
				failed[t.ID] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failed
}

func (o *Orchestrator) pullOne(ctx context.Context, j imageJob, pin string, t Machine) error {
	if !t.Reachable() {
		return t.unreachableErr()
	}
	_, err := o.engine.PullImage(ctx, t, api.ImagePullRequest{Pin: pin, Image: j.image, Policy: string(j.policy), Auth: j.auth},
		j.report)
	return err
}

// uniqueMachines keeps the first of each machine, in order.
func uniqueMachines(ts []Machine) []Machine {
	seen := map[string]bool{}
	var out []Machine
	for _, t := range ts {
		if !seen[t.ID] {
			seen[t.ID] = true
			out = append(out, t)
		}
	}
	return out
}

// lockedProgress makes a progress callback safe to call from several
// goroutines: callers of the backends get one call at a time.
func lockedProgress[T any](f func(T)) func(T) {
	if f == nil {
		return nil
	}
	var mu sync.Mutex
	return func(v T) {
		mu.Lock()
		defer mu.Unlock()
		f(v)
	}
}

// isUnavailable says whether err is a machine or its Docker not answering
// (another machine may), rather than an answer.
func isUnavailable(err error) bool {
	return errors.Is(err, api.ErrUnavailable) || errors.Is(err, runtime.ErrUnavailable)
}
