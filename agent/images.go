package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Images travel between machines as `docker save` tarballs streamed over
// the machine API: no registry needed, and a machine that has the image
// (same ID) is skipped.

const (
	runtimeImagePath  = "/v1/runtime/image"  // GET ?ref=: the image's ID here
	runtimeImagesPath = "/v1/runtime/images" // POST a tarball: docker load
)

func (d *Daemon) imageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+runtimeImagePath, func(w http.ResponseWriter, r *http.Request) {
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
		writeJSON(w, map[string]string{"id": id})
	})
	mux.HandleFunc("POST "+runtimeImagesPath, func(w http.ResponseWriter, r *http.Request) {
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
		writeJSON(w, map[string]string{"loaded": loaded})
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
	var have struct {
		ID string `json:"id"`
	}
	err := d.callMachine(ctx, t.ID, "GET", runtimeImagePath+"?ref="+url.QueryEscape(ref), nil, &have)
	var re *remoteError
	switch {
	case err == nil && have.ID == localID:
		return 0, "present", nil
	case err == nil, errors.As(err, &re) && re.Status == http.StatusNotFound:
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
	base, err := d.machineAPIURL(t.ID)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", base+runtimeImagesPath, body)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := d.runtimeClient().Do(req)
	if err != nil {
		return sent.Load(), "", d.remoteCallErr(t, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return sent.Load(), "", errors.New(string(msg))
	}
	var out struct {
		Loaded string `json:"loaded"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	return sent.Load(), "loaded", nil
}

// longMachineClient is the machine client without its answer timeout:
// loading a large image takes Docker a while after the upload ends.
func (d *Daemon) longMachineClient() *http.Client {
	tr, ok := d.machineClient.Transport.(*http.Transport)
	if !ok {
		return d.machineClient
	}
	tr = tr.Clone()
	tr.ResponseHeaderTimeout = 0
	return &http.Client{Transport: tr}
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
