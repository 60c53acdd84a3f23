package agent

import (
	"net/http"

	"github.com/uncloud-mesh/uncloud/api"
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
	mux.HandleFunc("POST "+api.MachinePathRuntimeImages, func(w http.ResponseWriter, r *http.Request) {
		rt, err := p.runtime()
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
