package api

import (
	"context"
	"net/http"
)

// ImageBackend moves images between machines' Docker Engines.
type ImageBackend interface {
	// PushImage sends a local image to other machines, calling progress
	// as bytes go out and once per machine at the end.
	PushImage(ctx context.Context, req PushRequest, progress func(PushProgress) error) error
}

// PushRequest is `uncloud image push`.
type PushRequest struct {
	Image    string   `json:"image"`
	Machines []string `json:"machines,omitempty"` // default: every other machine that runs containers
	// Force replaces a tag a target has for another image; without it
	// such a target is refused (another machine may own that tag there).
	Force bool `json:"force,omitempty"`
}

// PushProgress is one step of a push to one machine.
type PushProgress struct {
	Machine string `json:"machine"`
	Bytes   int64  `json:"bytes"`
	// Status is sending, loaded, present (the machine had the image
	// already) or failed (with Error).
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

func registerImageRoutes(mux *http.ServeMux, b ImageBackend) {
	mux.HandleFunc("POST "+PathImagePush, func(w http.ResponseWriter, r *http.Request) {
		var req PushRequest
		if err := decodeBody(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		streamLines(w, func(emit func(PushProgress) error) error {
			return b.PushImage(r.Context(), req, emit)
		})
	})
}
