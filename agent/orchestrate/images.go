package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Images travel between machines as `docker save` tarballs streamed over
// the machine API: no registry needed, and a machine that has the image
// (same ID) is skipped.

// PushImage implements api.ImageBackend.
func (o *Orchestrator) PushImage(ctx context.Context, req api.PushRequest, progress func(api.PushProgress) error) error {
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
	// Progress reports come from several goroutines: one writer at a time.
	var mu sync.Mutex
	report := func(p api.PushProgress) {
		mu.Lock()
		defer mu.Unlock()
		_ = progress(p)
	}
	var wg sync.WaitGroup
	for _, t := range targets {
		if t.State == "self" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, status, err := o.pushTo(ctx, self, t, api.ImageLoad{Ref: req.Image, ID: localID, Force: req.Force}, report)
			p := api.PushProgress{Machine: t.Name, Bytes: n, Status: status}
			if err != nil {
				p.Status, p.Error = "failed", err.Error()
			}
			report(p)
		}()
	}
	wg.Wait()
	return nil
}

// pushTo sends one image to one machine unless it has it already.
// A target whose tag names another image is refused unless forced: the
// tag may be another machine's deployment there.
func (o *Orchestrator) pushTo(ctx context.Context, self, t Machine, load api.ImageLoad,
	report func(api.PushProgress)) (int64, string, error) {
	if !t.Reachable() {
		return 0, "", t.unreachableErr()
	}
	ref := load.Ref
	haveID, err := o.engine.ImageID(ctx, t, ref)
	switch {
	case err == nil && haveID == load.ID:
		return 0, "present", nil
	case err == nil && !load.Force:
		return 0, "", fmt.Errorf("%s on %s is another image (%s, this one is %s): push with --force to replace it",
			ref, t.Name, shortImageID(haveID), shortImageID(load.ID))
	case err == nil, errors.Is(err, runtime.ErrImageNotFound):
	default:
		return 0, "", err
	}
	tarball, err := o.engine.SaveImage(ctx, self, ref)
	if err != nil {
		return 0, "", err
	}
	defer tarball.Close()
	var sent atomic.Int64
	body := &countingReader{r: tarball, n: &sent}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-tick.C:
				report(api.PushProgress{Machine: t.Name, Bytes: sent.Load(), Status: "sending"})
			case <-done:
				return
			}
		}
	}()
	if err := o.engine.LoadImage(ctx, t, body, load); err != nil {
		return sent.Load(), "", err
	}
	return sent.Load(), "loaded", nil
}

func shortImageID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
