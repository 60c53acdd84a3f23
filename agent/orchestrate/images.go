package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// The fallback way images travel between machines (push --method load):
// `docker save` tarballs streamed over the machine API to `docker load`,
// for engines that cannot pull from the agent's loopback registry. A
// machine that has the image (same ID) is skipped.

// pushLoad sends each target that lacks the image a whole `docker save`
// tarball (PushRequest.Method "load").
func (o *Orchestrator) pushLoad(ctx context.Context, req api.PushRequest, self Machine, localID string, targets []Machine,
	report func(api.ImageProgress)) {
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, status, err := o.pushTo(ctx, self, t, api.ImageLoad{Ref: req.Image, ID: localID, Force: req.Force}, report)
			p := api.ImageProgress{Machine: t.Name, Image: req.Image, Bytes: n, Status: status, Digest: localID}
			if err != nil {
				p.Status, p.Error = "failed", err.Error()
			}
			report(p)
		}()
	}
	wg.Wait()
}

// pushTo sends one image to one machine unless it has it already.
// A target whose tag names another image is refused unless forced: the
// tag may be another machine's deployment there.
func (o *Orchestrator) pushTo(ctx context.Context, self, t Machine, load api.ImageLoad,
	report func(api.ImageProgress)) (int64, string, error) {
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
			ref, t.Name, runtime.ShortID(haveID), runtime.ShortID(load.ID))
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
				report(api.ImageProgress{Machine: t.Name, Image: ref, Bytes: sent.Load(), Status: "sending"})
			case <-done:
				return
			}
		}
	}()
	if err := o.engine.LoadImage(ctx, t, body, load); err != nil {
		return sent.Load(), "", err
	}
	return sent.Load(), "done", nil
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
