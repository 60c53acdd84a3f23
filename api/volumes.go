package api

import (
	"context"
	"net/http"
)

// PathVolumes lists the services' named volumes and where they live.
const PathVolumes = "/v1/volumes" // GET

// VolumeBackend answers `uncloud volume ls`. NewLocalHandler serves its
// route when the container backend implements it.
type VolumeBackend interface {
	Volumes(ctx context.Context) ([]VolumeInfo, error)
}

// VolumeInfo is one named volume on one machine: a volume of the same
// name on two machines is two volumes (two rows), since Docker keeps
// each machine's data apart.
type VolumeInfo struct {
	Name      string `json:"name"`
	Machine   string `json:"machine"`
	MachineID string `json:"machine_id"`
	// Driver is Docker's volume driver; uncloud makes named volumes with
	// Docker's default, local.
	Driver string `json:"driver"`
	// Services are the services that mount it (and are tied to its machine).
	Services []string `json:"services"`
	// Containers counts the services' containers on that machine now.
	Containers int `json:"containers"`
}

func registerVolumeRoutes(mux *http.ServeMux, b VolumeBackend) {
	mux.HandleFunc("GET "+PathVolumes, func(w http.ResponseWriter, r *http.Request) {
		res, err := b.Volumes(r.Context())
		reply(w, res, err)
	})
}

// Volumes lists the services' named volumes and where they live.
func (c *Client) Volumes(ctx context.Context) ([]VolumeInfo, error) {
	var vs []VolumeInfo
	err := c.call(ctx, "Volumes", http.MethodGet, PathVolumes, nil, &vs)
	return vs, err
}
