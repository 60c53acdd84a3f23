package api

import (
	"context"
	"net/http"
)

// ImageBackend moves images between machines' Docker Engines.
type ImageBackend interface {
	// PushImage sends a local image to other machines, calling progress
	// as it goes and once per machine at the end (a final ImageProgress).
	PushImage(ctx context.Context, req PushRequest, progress func(ImageProgress) error) error
}

// PushRequest is `uncloud image push`.
type PushRequest struct {
	Image    string   `json:"image"`
	Machines []string `json:"machines,omitempty"` // default: every other machine that runs containers
	// Force replaces a tag a target has for another image; without it
	// such a target is refused (another machine may own that tag there).
	Force bool `json:"force,omitempty"`
	// Method is how the image travels: PushRegistry (the default: each
	// machine gets only the layers it lacks, through the agents' loopback
	// registries) or PushLoad (a whole `docker save` tarball to each
	// machine's `docker load`, for engines that cannot pull from the
	// agent's loopback registry).
	Method string `json:"method,omitempty"`
}

// The ways an image travels (PushRequest.Method).
const (
	PushRegistry = "registry"
	PushLoad     = "load"
)

func registerImageRoutes(mux *http.ServeMux, b ImageBackend) {
	mux.HandleFunc("POST "+PathImagePush, func(w http.ResponseWriter, r *http.Request) {
		var req PushRequest
		if err := decodeBody(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		streamLines(w, func(emit func(ImageProgress) error) error {
			return b.PushImage(r.Context(), req, emit)
		})
	})
}
