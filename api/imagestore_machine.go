package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/uncloud-mesh/uncloud/runtime"
)

// The machine API's image calls. Their answers may be larger than the
// other calls' (a machine with many images), so they are read with
// MaxImageAnswer as the bound instead of maxMachineAnswer.

// ListMachineImages lists machineID's images and what uses them.
func (c *MachineClient) ListMachineImages(ctx context.Context, machineID string) (runtime.ImageList, error) {
	var out runtime.ImageList
	err := c.imageCall(ctx, c.HTTP, "ListMachineImages", machineID, http.MethodGet, MachinePathRuntimeImageList, nil, &out)
	return out, err
}

// RemoveMachineImage removes an image on machineID (or checks whether
// it would refuse to).
func (c *MachineClient) RemoveMachineImage(ctx context.Context, machineID string, req MachineImageRemove) (runtime.ImageRemoval, error) {
	var out runtime.ImageRemoval
	err := c.imageCall(ctx, c.Long, "RemoveMachineImage", machineID, http.MethodPost, MachinePathRuntimeImageRm, req, &out)
	return out, err
}

// PruneMachineImages removes machineID's unused images.
func (c *MachineClient) PruneMachineImages(ctx context.Context, machineID string, opts runtime.PruneOptions) (runtime.PruneReport, error) {
	var out runtime.PruneReport
	err := c.imageCall(ctx, c.Long, "PruneMachineImages", machineID, http.MethodPost, MachinePathRuntimeImagePrune, opts, &out)
	return out, err
}

func (c *MachineClient) imageCall(ctx context.Context, h *http.Client, name, machineID, method, path string, in, out any) error {
	resp, err := c.send(ctx, h, name, machineID, func(base string) (*http.Request, error) {
		return NewJSONRequest(ctx, method, base+path, in)
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxImageAnswer)).Decode(out); err != nil {
		return &CallError{Call: name, Target: "machine " + machineID,
			Err: fmt.Errorf("decode the answer (at most %d MiB): %w", MaxImageAnswer>>20, err)}
	}
	return nil
}
