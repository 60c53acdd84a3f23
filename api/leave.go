package api

import (
	"context"
	"net/http"
)

// Leaving: a machine cannot revoke itself (a revocation it signs is only
// as good as its own keys), so it asks another member to run the same
// removal `machine rm` runs, on its behalf.
const (
	// PathLeave (local API, POST): take this machine out of its network;
	// answers LeaveResult.
	PathLeave = "/v1/leave"
	// MachinePathLeave (machine API, POST): the callee removes the
	// authenticated caller, and only it; answers LeaveResult at once and
	// removes it right after (the removal cuts the caller off, so it
	// could not hear a later answer).
	MachinePathLeave = "/v1/leave"
)

// LeaveResult says which machine took the request to remove Name.
type LeaveResult struct {
	Name string `json:"name"`
	By   string `json:"by"` // the member that removes it
}

// LeaveBackend is the local API's leave call; a Backend that has it
// serves PathLeave.
type LeaveBackend interface {
	Leave(ctx context.Context) (LeaveResult, error)
}

// Leave asks this machine's agent to take the machine out of its network.
func (c *Client) Leave(ctx context.Context) (LeaveResult, error) {
	var res LeaveResult
	err := c.call(ctx, "Leave", http.MethodPost, PathLeave, nil, &res)
	return res, err
}

// Leave asks machineID to remove the calling machine from the network.
func (c *MachineClient) Leave(ctx context.Context, machineID string) (LeaveResult, error) {
	var res LeaveResult
	err := c.call(ctx, c.HTTP, "Leave", machineID, http.MethodPost, MachinePathLeave, nil, &res)
	return res, err
}

// leaveRoutes adds PathLeave to mux when b can leave.
func leaveRoutes(mux *http.ServeMux, b Backend) {
	lb, ok := b.(LeaveBackend)
	if !ok {
		return
	}
	mux.HandleFunc("POST "+PathLeave, func(w http.ResponseWriter, r *http.Request) {
		res, err := lb.Leave(r.Context())
		reply(w, res, err)
	})
}
