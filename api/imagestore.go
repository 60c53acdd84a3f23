package api

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/uncloud-mesh/uncloud/runtime"
)

// `uncloud image ls|rm|prune`: what each machine's Docker holds, and
// removing what no container needs. Every command asks each machine
// itself (its Docker is the truth, not the state) and says per machine
// how that went, so a machine that cannot be reached is named, never
// silently left out.

// ImageStoreBackend answers the image commands across machines.
type ImageStoreBackend interface {
	ListImages(ctx context.Context, req ImageListRequest) (ImageList, error)
	RemoveImage(ctx context.Context, req ImageRemoveRequest) (ImageRemoveResult, error)
	PruneImages(ctx context.Context, req ImagePruneRequest) (ImagePruneResult, error)
}

// ImageListRequest is `uncloud image ls`.
type ImageListRequest struct {
	Machines []string `json:"machines,omitempty"` // default: every machine that may run containers
}

// ImageList is every asked machine's images, one entry per image and
// machine, sorted by image name, then ID, then machine.
type ImageList struct {
	Images   []ImageInfo    `json:"images"`
	Machines []ImageMachine `json:"machines"`
}

// ImageInfo is one image in one machine's Docker.
type ImageInfo struct {
	Machine   string    `json:"machine"`
	MachineID string    `json:"machine_id"`
	ID        string    `json:"id"`
	Tags      []string  `json:"tags,omitempty"`
	Digests   []string  `json:"digests,omitempty"`
	Size      int64     `json:"size"`
	Created   time.Time `json:"created,omitzero"`
	// Services are the uncloud services whose containers on the machine
	// use the image, sorted; Containers says which (at most
	// runtime.MaxImageUsers of InUse).
	Services   []string            `json:"services,omitempty"`
	Containers []runtime.ImageUser `json:"containers,omitempty"`
	InUse      int                 `json:"in_use"`
	// OtherContainers counts containers uncloud did not run that use it.
	OtherContainers int `json:"other_containers,omitempty"`
}

// ImageMachine is how one machine answered an image command.
type ImageMachine struct {
	Machine   string `json:"machine"`
	MachineID string `json:"machine_id"`
	// State is ok, unreachable (down, or the call did not get through),
	// or failed (it answered with Error); rm adds removed, absent (it has
	// no such image) and refused (an uncloud container uses it, or Docker
	// said no).
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// Truncated says the machine listed only part of its images (see
	// runtime.MaxListedImages).
	Truncated bool `json:"truncated,omitempty"`
}

// ImageRemoveRequest is `uncloud image rm`.
type ImageRemoveRequest struct {
	Image    string   `json:"image"`              // a name, an ID or a digest
	Machines []string `json:"machines,omitempty"` // default: every machine that has it
	// Force removes it even where uncloud containers use it (Docker's
	// own rules still hold: it keeps an image a running container uses).
	Force bool `json:"force,omitempty"`
}

// ImageRemoveResult says per machine what the removal did.
type ImageRemoveResult struct {
	Image    string         `json:"image"`
	Machines []ImageRemoved `json:"machines"`
}

// ImageRemoved is one machine's removal.
type ImageRemoved struct {
	ImageMachine
	ID       string   `json:"id,omitempty"`
	Untagged []string `json:"untagged,omitempty"`
	Deleted  []string `json:"deleted,omitempty"`
}

// ImagePruneRequest is `uncloud image prune`.
type ImagePruneRequest struct {
	Machines []string `json:"machines,omitempty"` // default: every machine that may run containers
	All      bool     `json:"all,omitempty"`      // every unused image, not only dangling ones
	DryRun   bool     `json:"dry_run,omitempty"`
}

// ImagePruneResult says per machine what went (or would).
type ImagePruneResult struct {
	DryRun   bool          `json:"dry_run,omitempty"`
	Machines []ImagePruned `json:"machines"`
}

// ImagePruned is one machine's prune.
type ImagePruned struct {
	ImageMachine
	Removed   []runtime.Image `json:"removed,omitempty"`
	Count     int             `json:"count"`
	Failed    []string        `json:"failed,omitempty"`
	Reclaimed int64           `json:"reclaimed"` // bytes, about (runtime.PruneReport)
}

// MachineImageRemove asks a machine to remove an image (or, with Check,
// whether it would refuse).
type MachineImageRemove struct {
	Ref   string `json:"ref"`
	Force bool   `json:"force,omitempty"`
	Check bool   `json:"check,omitempty"`
}

// MaxImageAnswer bounds a machine's answer to an image call; a machine
// trims its listing to fit and says Truncated.
const MaxImageAnswer = 8 << 20

func registerImageStoreRoutes(mux *http.ServeMux, b ImageStoreBackend) {
	mux.HandleFunc("GET "+PathImageList, func(w http.ResponseWriter, r *http.Request) {
		res, err := b.ListImages(r.Context(), ImageListRequest{Machines: r.URL.Query()["machine"]})
		reply(w, res, err)
	})
	mux.HandleFunc("POST "+PathImageRm, func(w http.ResponseWriter, r *http.Request) {
		var req ImageRemoveRequest
		if err := decodeBody(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		res, err := b.RemoveImage(r.Context(), req)
		reply(w, res, err)
	})
	mux.HandleFunc("POST "+PathImagePrune, func(w http.ResponseWriter, r *http.Request) {
		var req ImagePruneRequest
		if err := decodeBody(r, &req); err != nil {
			reply(w, nil, err)
			return
		}
		res, err := b.PruneImages(r.Context(), req)
		reply(w, res, err)
	})
}

// ListImages lists the images of the network's machines.
func (c *Client) ListImages(ctx context.Context, req ImageListRequest) (ImageList, error) {
	var res ImageList
	path := PathImageList
	if len(req.Machines) > 0 {
		path += "?" + url.Values{"machine": req.Machines}.Encode()
	}
	err := c.call(ctx, "ListImages", http.MethodGet, path, nil, &res)
	return res, err
}

// RemoveImage removes an image from machines.
func (c *Client) RemoveImage(ctx context.Context, req ImageRemoveRequest) (ImageRemoveResult, error) {
	var res ImageRemoveResult
	err := c.call(ctx, "RemoveImage", http.MethodPost, PathImageRm, req, &res)
	return res, err
}

// PruneImages removes unused images from machines.
func (c *Client) PruneImages(ctx context.Context, req ImagePruneRequest) (ImagePruneResult, error) {
	var res ImagePruneResult
	err := c.call(ctx, "PruneImages", http.MethodPost, PathImagePrune, req, &res)
	return res, err
}
