package api

import (
	"context"
	"net/http"
	"time"

	"github.com/uncloud-mesh/uncloud/record"
)

// RolloutBackend keeps each service's versions and goes back to one.
type RolloutBackend interface {
	// History is the service's versions, newest first.
	History(ctx context.Context, service string) ([]ServiceVersion, error)
	// Rollback deploys an earlier version (the previous one unless
	// req.To says which) as a start-first rollout, reporting it as a
	// deploy does.
	Rollback(ctx context.Context, service string, req RollbackRequest, event func(DeployEvent) error) error
}

// UpdateConfig is how a service's rollouts go (record.UpdateConfig).
type UpdateConfig = record.UpdateConfig

// ServiceVersion is one version of a service as `uncloud history` shows
// it. The spec itself is not sent: its environment may hold secrets.
type ServiceVersion struct {
	N       int       `json:"n"`
	Current bool      `json:"current,omitempty"`
	Time    time.Time `json:"time"`
	Image   string    `json:"image"`
	Digest  string    `json:"digest,omitempty"`
	Machine string    `json:"machine"`
	User    string    `json:"user,omitempty"`
	// Action is run, deploy or rollback (of RollbackOf).
	Action     string `json:"action"`
	RollbackOf int    `json:"rollback_of,omitempty"`
}

// RollbackRequest is `uncloud rollback`.
type RollbackRequest struct {
	To int    `json:"to,omitempty"` // version number; default the previous one
	By string `json:"by,omitempty"` // the CLI's user@host
}

func registerRolloutRoutes(mux *http.ServeMux, b RolloutBackend) {
	mux.HandleFunc("GET "+PathServices+"/{name}/history", func(w http.ResponseWriter, r *http.Request) {
		res, err := b.History(r.Context(), r.PathValue("name"))
		reply(w, res, err)
	})
	mux.HandleFunc("POST "+PathServices+"/{name}/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req RollbackRequest
		if err := decodeBody(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		streamLines(w, func(emit func(DeployEvent) error) error {
			return b.Rollback(r.Context(), r.PathValue("name"), req, emit)
		})
	})
}

// History lists a service's versions, newest first.
func (c *Client) History(ctx context.Context, service string) ([]ServiceVersion, error) {
	var vs []ServiceVersion
	err := c.call(ctx, "History", http.MethodGet, under(PathServices, service, "history"), nil, &vs)
	return vs, err
}

// Rollback deploys an earlier version of a service, reporting each step.
func (c *Client) Rollback(ctx context.Context, service string, req RollbackRequest, event func(DeployEvent) error) error {
	return stream(ctx, c, "Rollback", http.MethodPost, under(PathServices, service, "rollback"), req, event)
}
