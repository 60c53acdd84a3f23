package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// This machine's side of pulls: resolve a tag to a pin, and pull a pin
// through this machine's Docker, for the machine that got the command.
// The credentials in a request are used for its one Docker call and then
// dropped; nothing here logs a request body.

func (p *localDocker) pullRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+api.MachinePathImageResolve, func(w http.ResponseWriter, r *http.Request) {
		var req api.ImageResolveRequest
		if err := decodeMachineBody(r, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		a, err := p.resolveImage(r.Context(), req)
		if err != nil {
			writeRuntimeError(w, err)
			return
		}
		writeJSON(w, a)
	})
	mux.HandleFunc("POST "+api.MachinePathImagePull, func(w http.ResponseWriter, r *http.Request) {
		var req api.ImagePullRequest
		if err := decodeMachineBody(r, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if _, err := p.runtime(); err != nil {
			writeRuntimeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		flusher, _ := w.(http.Flusher)
		enc := json.NewEncoder(w)
		// The last line is the outcome; a failure is a line too, since
		// the status was sent with the first.
		final, err := p.pullImage(r.Context(), req, func(u api.ImageProgress) {
			enc.Encode(u)
			if flusher != nil {
				flusher.Flush()
			}
		})
		if err != nil {
			final = api.ImageProgress{Machine: p.machineName(), Image: req.Image, Status: "failed", Error: err.Error()}
		}
		enc.Encode(final)
	})
}

// maxMachineBody bounds a machine API request body.
const maxMachineBody = 1 << 20

func decodeMachineBody(r *http.Request, v any) error {
	return json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxMachineBody)).Decode(v)
}

// resolveImage resolves a reference to a pin through this machine's Docker.
func (p *localDocker) resolveImage(ctx context.Context, req api.ImageResolveRequest) (api.ImageResolveAnswer, error) {
	rt, err := p.runtime()
	if err != nil {
		return api.ImageResolveAnswer{}, err
	}
	policy, err := runtime.ParsePullPolicy(req.Policy)
	if err != nil {
		return api.ImageResolveAnswer{}, err
	}
	auth, err := req.Auth.Header()
	if err != nil {
		return api.ImageResolveAnswer{}, err
	}
	res, err := rt.Resolve(ctx, req.Ref, runtime.ResolveOptions{Policy: policy, RegistryFirst: req.RegistryFirst, Auth: auth})
	if err != nil {
		return api.ImageResolveAnswer{}, err
	}
	return api.ImageResolveAnswer{Pin: res.Pin, Digest: res.Digest, From: res.From, Warning: res.Warning}, nil
}

// pullProgressEvery is how often a pull's progress goes out at most.
const pullProgressEvery = 250 * time.Millisecond

// pullImage makes this machine's Docker have req.Pin, reporting progress
// now and then; it returns the last word (done or present).
func (p *localDocker) pullImage(ctx context.Context, req api.ImagePullRequest, progress func(api.ImageProgress)) (api.ImageProgress, error) {
	rt, err := p.runtime()
	if err != nil {
		return api.ImageProgress{}, err
	}
	policy, err := runtime.ParsePullPolicy(req.Policy)
	if err != nil {
		return api.ImageProgress{}, err
	}
	auth, err := req.Auth.Header()
	if err != nil {
		return api.ImageProgress{}, err
	}
	base := api.ImageProgress{Machine: p.machineName(), Image: req.Image}
	var last time.Time
	var status runtime.PullStatus
	present, err := rt.Pull(ctx, req.Pin, policy, auth, func(s runtime.PullStatus) {
		status = s
		if progress == nil || time.Since(last) < pullProgressEvery {
			return
		}
		last = time.Now()
		u := base
		u.Status, u.Layers, u.LayersDone, u.Bytes, u.Total = "pulling", s.Layers, s.LayersDone, s.Bytes, s.Total
		progress(u)
	})
	if err != nil {
		return api.ImageProgress{}, p.explainLocalPin(ctx, rt, req, err)
	}
	final := base
	final.Status, final.Digest = "done", pinDigest(req.Pin)
	if present {
		final.Status = "present"
	} else {
		final.Layers, final.LayersDone, final.Bytes, final.Total = status.Layers, status.Layers, status.Bytes, status.Total
	}
	return final, nil
}

// pinDigest is the digest part of a pin (runtime.ContainerSpec.PinDigest).
func pinDigest(pin string) string {
	return runtime.ContainerSpec{ImagePin: pin}.PinDigest()
}

// explainLocalPin says more when a machine lacks a pinned local image
// (one no registry knows) but has the name for another image: built or
// loaded there separately, it is not the bytes the service runs.
func (p *localDocker) explainLocalPin(ctx context.Context, rt *runtime.Runtime, req api.ImagePullRequest, err error) error {
	if !errors.Is(err, runtime.ErrImageNotFound) || strings.Contains(req.Pin, "@") || req.Image == "" {
		return err
	}
	have, idErr := rt.ImageID(ctx, req.Image)
	if idErr != nil || have == req.Pin {
		return err
	}
	return fmt.Errorf("%w: %s here is image %s, but the service runs %s (the image the machine that ran it had; no registry knows it): send that one with 'uncloud image push %s -m %s --force'",
		runtime.ErrImageNotFound, req.Image, runtime.ShortID(have), runtime.ShortID(req.Pin), req.Image, p.machineName())
}
