package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/uncloud-mesh/uncloud/agent/orchestrate"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// The image commands (ls, rm, prune) on this machine's Docker: the
// machine API routes that serve them to the other machines, and the
// engine's side of orchestrate.ImageEngine.

func (p *localDocker) imageStoreRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.MachinePathRuntimeImageList, func(w http.ResponseWriter, r *http.Request) {
		rt, err := p.runtime()
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		list, err := rt.Images(r.Context())
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		writeBounded(w, &list, func() bool {
			if len(list.Images) == 0 {
				return false
			}
			list.Images, list.Truncated = list.Images[:len(list.Images)/2], true
			return true
		})
	})
	mux.HandleFunc("POST "+api.MachinePathRuntimeImageRm, func(w http.ResponseWriter, r *http.Request) {
		var req api.MachineImageRemove
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			http.Error(w, "image rm: "+err.Error(), http.StatusBadRequest)
			return
		}
		rt, err := p.runtime()
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		rm, err := rt.RemoveImage(r.Context(), req.Ref, runtime.RemoveImageOptions{Force: req.Force, Check: req.Check})
		if err != nil {
			http.Error(w, err.Error(), imageStatus(err))
			return
		}
		writeBounded(w, &rm, func() bool {
			if len(rm.Untagged)+len(rm.Deleted) == 0 {
				return false
			}
			rm.Untagged, rm.Deleted = rm.Untagged[:len(rm.Untagged)/2], rm.Deleted[:len(rm.Deleted)/2]
			return true
		})
	})
	mux.HandleFunc("POST "+api.MachinePathRuntimeImagePrune, func(w http.ResponseWriter, r *http.Request) {
		var opts runtime.PruneOptions
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&opts); err != nil {
			http.Error(w, "image prune: "+err.Error(), http.StatusBadRequest)
			return
		}
		rt, err := p.runtime()
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		rep, err := rt.PruneImages(r.Context(), opts)
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		writeBounded(w, &rep, func() bool {
			if len(rep.Removed) == 0 {
				return false
			}
			rep.Removed = rep.Removed[:len(rep.Removed)/2] // Count still says how many
			return true
		})
	})
}

// writeBounded answers v as JSON of at most api.MaxImageAnswer bytes,
// calling shrink (which drops part of v's list) until it fits; when
// nothing is left to drop, the answer goes as it is.
func writeBounded(w http.ResponseWriter, v any, shrink func() bool) {
	for {
		b, err := json.Marshal(v)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if len(b) <= api.MaxImageAnswer || !shrink() {
			w.Header().Set("Content-Type", "application/json")
			w.Write(b)
			return
		}
	}
}

// imageStatus maps a removal's error to its answer: a refusal is 409.
func imageStatus(err error) int {
	if errors.Is(err, runtime.ErrImageInUse) || errors.Is(err, runtime.ErrImageRefused) {
		return http.StatusConflict
	}
	return runtimeStatus(err)
}

// imageCallErr is another machine's answer to an image call, said as it
// said it but still telling a missing image (404) and a refusal (409)
// apart from other failures.
func imageCallErr(m orchestrate.Machine, err error) error {
	var se *api.StatusError
	if errors.As(err, &se) {
		switch {
		case errors.Is(se, api.ErrNotFound):
			return saidErr{se.Message, runtime.ErrImageNotFound}
		case errors.Is(se, api.ErrConflict):
			return saidErr{se.Message, runtime.ErrImageInUse}
		case errors.Is(se, api.ErrBadRequest):
			return saidErr{se.Message, runtime.ErrBadSpec}
		}
	}
	return remoteCallErr(m, err)
}

// saidErr is a message from another machine that still matches the
// error it stands for.
type saidErr struct {
	msg string
	is  error
}

func (e saidErr) Error() string { return e.msg }
func (e saidErr) Unwrap() error { return e.is }

func (e engine) ListImages(ctx context.Context, m orchestrate.Machine) (runtime.ImageList, error) {
	if local(m) {
		rt, err := e.d.containers.runtime()
		if err != nil {
			return runtime.ImageList{}, err
		}
		return rt.Images(ctx)
	}
	list, err := e.d.machineAPI.ListMachineImages(ctx, m.ID)
	if err != nil {
		return list, imageCallErr(m, err)
	}
	return list, nil
}

func (e engine) RemoveImage(ctx context.Context, m orchestrate.Machine, ref string, opts runtime.RemoveImageOptions) (runtime.ImageRemoval, error) {
	if local(m) {
		rt, err := e.d.containers.runtime()
		if err != nil {
			return runtime.ImageRemoval{}, err
		}
		return rt.RemoveImage(ctx, ref, opts)
	}
	rm, err := e.d.machineAPI.RemoveMachineImage(ctx, m.ID, api.MachineImageRemove{Ref: ref, Force: opts.Force, Check: opts.Check})
	if err != nil {
		return rm, imageCallErr(m, err)
	}
	return rm, nil
}

func (e engine) PruneImages(ctx context.Context, m orchestrate.Machine, opts runtime.PruneOptions) (runtime.PruneReport, error) {
	if local(m) {
		rt, err := e.d.containers.runtime()
		if err != nil {
			return runtime.PruneReport{}, err
		}
		return rt.PruneImages(ctx, opts)
	}
	rep, err := e.d.machineAPI.PruneMachineImages(ctx, m.ID, opts)
	if err != nil {
		return rep, imageCallErr(m, err)
	}
	return rep, nil
}

var (
	_ orchestrate.ImageEngine = engine{}
	_ api.ImageStoreBackend   = (*Daemon)(nil)
)
