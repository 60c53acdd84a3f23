package api

import (
	"context"
	"net/http"
)

// Evacuating: `uncloud leave --move` first starts, on other machines, as
// many replicas of each service as run on the leaving machine, waits for
// them to be healthy, and only then removes the ones there.
const (
	// PathEvacuate (local API, POST EvacuateRequest): move a machine's
	// replicas elsewhere; answers EvacuateResult.
	PathEvacuate = "/v1/evacuate"
)

// EvacuateRequest names the machine whose replicas move.
type EvacuateRequest struct {
	Machine string `json:"machine"` // name or ID
	// DryRun answers the plan only: nothing is created or removed.
	DryRun bool `json:"dry_run,omitempty"`
}

// EvacuateMove is one container of the machine and where its
// replacement goes.
type EvacuateMove struct {
	Service string `json:"service"`
	From    string `json:"from"`          // the container on the leaving machine
	To      string `json:"to"`            // the machine its replacement goes to
	New     string `json:"new,omitempty"` // the replacement, once made
	// Done: the replacement is healthy and the old container removed.
	Done  bool   `json:"done,omitempty"`
	Error string `json:"error,omitempty"`
}

// EvacuateResult is the plan (or what was done) of an evacuation.
type EvacuateResult struct {
	Machine string         `json:"machine"`
	Moves   []EvacuateMove `json:"moves,omitempty"`
	// Refused says, per service that cannot move, why ("no other
	// machine can take web: …"); any refusal means nothing was done.
	Refused []string `json:"refused,omitempty"`
	// Stay are containers not moved: those of global services, which
	// run on every machine already.
	Stay []string `json:"stay,omitempty"`
}

// EvacuateBackend moves a machine's replicas to other machines; a
// ContainerBackend that has it serves PathEvacuate.
type EvacuateBackend interface {
	Evacuate(ctx context.Context, req EvacuateRequest) (EvacuateResult, error)
}

func registerEvacuateRoutes(mux *http.ServeMux, b EvacuateBackend) {
	mux.HandleFunc("POST "+PathEvacuate, func(w http.ResponseWriter, r *http.Request) {
		var req EvacuateRequest
		if err := decodeBody(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		res, err := b.Evacuate(r.Context(), req)
		reply(w, res, err)
	})
}

// Evacuate moves (or with DryRun, plans to move) a machine's replicas to
// other machines.
func (c *Client) Evacuate(ctx context.Context, req EvacuateRequest) (EvacuateResult, error) {
	var res EvacuateResult
	err := c.call(ctx, "Evacuate", http.MethodPost, PathEvacuate, req, &res)
	return res, err
}
