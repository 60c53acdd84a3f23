package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/docker/docker/errdefs"
)

// ImageID is the ID of a local image, or ErrImageNotFound.
func (r *Runtime) ImageID(ctx context.Context, ref string) (string, error) {
	img, err := r.docker.ImageInspect(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return "", fmt.Errorf("%w: %q is not in Docker on %s", ErrImageNotFound, ref, r.cfg.MachineName)
		}
		return "", fmt.Errorf("%w: inspect image %q: %w", ErrUnavailable, ref, err)
	}
	return img.ID, nil
}

// SaveImage streams the image as a `docker save` tarball.
func (r *Runtime) SaveImage(ctx context.Context, ref string) (io.ReadCloser, error) {
	if _, err := r.ImageID(ctx, ref); err != nil {
		return nil, err
	}
	rc, err := r.docker.ImageSave(ctx, []string{ref})
	if err != nil {
		return nil, fmt.Errorf("save image %q on %s: %w", ref, r.cfg.MachineName, err)
	}
	return rc, nil
}

// LoadImage loads a `docker save` tarball and returns what Docker said it
// loaded.
func (r *Runtime) LoadImage(ctx context.Context, tarball io.Reader) (string, error) {
	resp, err := r.docker.ImageLoad(ctx, tarball)
	if err != nil {
		return "", fmt.Errorf("load image on %s: %w", r.cfg.MachineName, err)
	}
	defer resp.Body.Close()
	// The answer is a JSON message stream; a failure is a message with an
	// error in it, not an HTTP status.
	dec := json.NewDecoder(resp.Body)
	var loaded string
	for {
		var m struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return loaded, fmt.Errorf("load image on %s: read Docker's answer: %w", r.cfg.MachineName, err)
		}
		if m.Error != "" {
			return loaded, fmt.Errorf("load image on %s: %s", r.cfg.MachineName, m.Error)
		}
		if m.Stream != "" {
			loaded += m.Stream
		}
	}
	return loaded, nil
}
