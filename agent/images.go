package agent

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// Images travel between machines as `docker save` tarballs streamed over
// the machine API: no registry needed, and a machine that has the image
// (same ID) is skipped.

func (p *localDocker) imageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.MachinePathRuntimeImage, func(w http.ResponseWriter, r *http.Request) {
		rt, err := p.runtime()
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
	mux.HandleFunc("POST "+api.MachinePathRuntimeImages, p.handleLoadImage)
}

// DefaultImageMaxBytes bounds one pushed image tarball (--image-max-bytes).
const DefaultImageMaxBytes = 8 << 30

// handleLoadImage loads a pushed `docker save` tarball. Every input from
// the network is bounded: the tarball may not exceed the machine's limit
// (413, before a byte is read when the sender says its length, else as soon
// as it goes past). A tag this machine has for another image is not taken
// over unless the push is forced (409): checked on the declared tag first,
// then on what Docker did (runtime.LoadImage puts a moved tag back).
func (p *localDocker) handleLoadImage(w http.ResponseWriter, r *http.Request) {
	rt, err := p.runtime()
	if err != nil {
		writeRuntimeError(w, err)
		return
	}
	limit := p.imageMaxBytes
	if r.ContentLength > limit {
		http.Error(w, tooLarge(p.machineName(), limit).Error(), http.StatusRequestEntityTooLarge)
		return
	}
	q := r.URL.Query()
	force := q.Get("force") == "1"
	if ref, id := q.Get("ref"), q.Get("id"); ref != "" && !force {
		if have, err := rt.ImageID(r.Context(), ref); err == nil && have != id {
			http.Error(w, fmt.Sprintf("%v on %s: %s is image %s here; push with --force to replace it",
				runtime.ErrImageRetag, p.machineName(), ref, have), http.StatusConflict)
			return
		}
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	loaded, err := rt.LoadImage(r.Context(), body, runtime.LoadOptions{Force: force})
	var big *http.MaxBytesError
	switch {
	case errors.As(err, &big):
		http.Error(w, tooLarge(p.machineName(), limit).Error(), http.StatusRequestEntityTooLarge)
	case errors.Is(err, runtime.ErrImageRetag):
		http.Error(w, err.Error(), http.StatusConflict)
	case err != nil:
		writeRuntimeError(w, err)
	default:
		writeJSON(w, api.ImageLoadAnswer{Loaded: loaded})
	}
}

func tooLarge(machine string, limit int64) error {
	return fmt.Errorf("the image is larger than the %d MiB that %s accepts in one push (its agent's --image-max-bytes)", limit>>20, machine)
}
