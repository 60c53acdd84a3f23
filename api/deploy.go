package api

import (
	"context"
	"net/http"
)

// DeployBackend applies a set of services (from a Compose file) as a plan.
type DeployBackend interface {
	Deploy(ctx context.Context, req DeployRequest, event func(DeployEvent) error) error
}

// DeployRequest is `uncloud deploy`: the services wanted.
type DeployRequest struct {
	Services []RunRequest `json:"services"`
	DryRun   bool         `json:"dry_run,omitempty"` // plan only
	// RemoveOrphans removes the services of the project that the request
	// does not name (deploy --remove-orphans); without it they are only
	// reported (plan action "orphan").
	RemoveOrphans bool `json:"remove_orphans,omitempty"`
	// RegistryAuths are the CLI user's credentials, by registry host
	// (docker.io for Docker Hub), for the registries of these services'
	// images only; used for this deploy's pulls and never stored.
	RegistryAuths map[string]RegistryAuth `json:"registry_auths,omitempty"`
	// By is the CLI's user@host, kept in the history of each service
	// this deploy changes.
	By string `json:"by,omitempty"`
}

// DeployEvent is one line of a deploy: first the plan (Plan set), then
// what happened.
type DeployEvent struct {
	Plan      bool   `json:"plan,omitempty"`
	Service   string `json:"service"`
	Machine   string `json:"machine,omitempty"`
	Container string `json:"container,omitempty"`
	// Action: create, replace, remove, unchanged, orphan in the plan; created,
	// stopped, healthy, removed, failed, rollback, done as it runs.
	Action string `json:"action"`
	Detail string `json:"detail,omitempty"`
	// Image is a step of a pull (Action "pull").
	Image *ImageProgress `json:"image,omitempty"`
}

func registerDeployRoutes(mux *http.ServeMux, b DeployBackend) {
	mux.HandleFunc("POST "+PathDeploy, func(w http.ResponseWriter, r *http.Request) {
		var req DeployRequest
		if err := decodeBody(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		streamLines(w, func(emit func(DeployEvent) error) error {
			return b.Deploy(r.Context(), req, emit)
		})
	})
}
