package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
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
	mux.HandleFunc("POST /v1/images/push", func(w http.ResponseWriter, r *http.Request) {
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

// Stream calls the local API and hands each JSON line of the answer to
// line; a line with only "error" set ends the stream with that error.
func (c *Client) Stream(ctx context.Context, method, path string, in any, line func(json.RawMessage) error) error {
	req, err := NewJSONRequest(ctx, method, c.BaseURL+path, in)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := answerError(resp); err != nil {
		return err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 2<<20)
	for sc.Scan() {
		var e apiError
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Error != "" {
			return fmt.Errorf("%s", e.Error)
		}
		if err := line(json.RawMessage(sc.Bytes())); err != nil {
			return err
		}
	}
	return sc.Err()
}
