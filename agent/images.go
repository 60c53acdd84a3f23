package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Images travel between machines as `docker save` tarballs streamed over
// the machine API: no registry needed, and a machine that has the image
// (same ID) is skipped.

func (d *Daemon) imageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.MachinePathRuntimeImage, func(w http.ResponseWriter, r *http.Request) {
		rt, err := d.localRuntime()
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		id, err := rt.ImageID(r.Context(), r.URL.Query().Get("ref"))
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		writeJSON(w, api.ImageIDAnswer{ID: id})
	})
	mux.HandleFunc("POST "+api.MachinePathRuntimeImages, func(w http.ResponseWriter, r *http.Request) {
		rt, err := d.localRuntime()
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		loaded, err := rt.LoadImage(r.Context(), r.Body)
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		writeJSON(w, api.ImageLoadAnswer{Loaded: loaded})
	})
}

// PushImage implements api.ImageBackend.
func (d *Daemon) PushImage(ctx context.Context, req api.PushRequest, progress func(api.PushProgress) error) error {
	rt, err := d.localRuntime()
	if err != nil {
		return err
	}
	localID, err := rt.ImageID(ctx, req.Image)
	if err != nil {
		if errors.Is(err, runtime.ErrImageNotFound) {
			return fmt.Errorf("%w: %v", api.ErrNotFound, err)
		}
		return err
	}
	all, err := d.targets(ctx)
	if err != nil {
		return err
	}
	var targets []target
	if len(req.Machines) > 0 {
		if targets, err = pickTargets(all, req.Machines); err != nil {
			return err
		}
	} else if targets, err = d.placeTargets(ctx, all, nil); err != nil {
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
			n, status, err := d.pushTo(ctx, rt, t, req.Image, localID, report)
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
func (d *Daemon) pushTo(ctx context.Context, rt *runtime.Runtime, t target, ref, localID string,
	report func(api.PushProgress)) (int64, string, error) {
	if !t.reachable() {
		return 0, "", t.unreachableErr()
	}
	haveID, err := d.machineAPI.ImageID(ctx, t.ID, ref)
	switch {
	case err == nil && haveID == localID:
		return 0, "present", nil
	case err == nil, errors.Is(err, api.ErrNotFound):
	default:
		return 0, "", d.remoteCallErr(t, err)
	}
	tarball, err := rt.SaveImage(ctx, ref)
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
	if _, err := d.machineAPI.LoadImage(ctx, t.ID, body); err != nil {
		return sent.Load(), "", d.remoteCallErr(t, err)
	}
	return sent.Load(), "loaded", nil
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

var _ api.ImageBackend = (*Daemon)(nil)
