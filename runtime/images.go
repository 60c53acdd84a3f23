package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/image"
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

// ErrImageRetag is a load that would move a tag this machine's Docker
// already has to another image: another machine may have put it there,
// so a push does not silently take it over unless forced.
var ErrImageRetag = errors.New("the image would replace an existing tag")

// LoadOptions guard a load.
type LoadOptions struct {
	// Force lets the load move existing tags to the loaded images.
	Force bool
}

// LoadImage loads a `docker save` tarball and returns what Docker said it
// loaded. Unless opts.Force, a load that moved an existing tag to another
// image is undone for that tag (the old image is still there, untagged,
// so it gets its tag back) and answered with ErrImageRetag: the check is
// made on what Docker actually did, not on what the sender declared, so
// a tarball that names other tags than the one pushed cannot take them.
func (r *Runtime) LoadImage(ctx context.Context, tarball io.Reader, opts LoadOptions) (string, error) {
	var before map[string]string
	if !opts.Force {
		var err error
		if before, err = r.imageTags(ctx); err != nil {
			return "", err
		}
	}
	loaded, err := r.loadImage(ctx, tarball)
	if err != nil || opts.Force {
		return loaded, err
	}
	after, err := r.imageTags(ctx)
	if err != nil {
		return loaded, err
	}
	moved := movedTags(before, after)
	var undone []string
	for tag, old := range moved {
		if err := r.docker.ImageTag(ctx, old, tag); err != nil {
			return loaded, fmt.Errorf("load image on %s moved tag %s from %s and it could not be put back: %w", r.cfg.MachineName, tag, ShortID(old), err)
		}
		undone = append(undone, fmt.Sprintf("%s (was %s, the push has %s)", tag, ShortID(old), ShortID(after[tag])))
	}
	if len(undone) > 0 {
		sort.Strings(undone)
		return loaded, fmt.Errorf("%w on %s: %s; the tag is kept as it was; push with --force to replace it",
			ErrImageRetag, r.cfg.MachineName, strings.Join(undone, ", "))
	}
	return loaded, nil
}

// movedTags are the tags of before that point to another image in after:
// tag -> the image it pointed to.
func movedTags(before, after map[string]string) map[string]string {
	out := map[string]string{}
	for tag, id := range before {
		if now, ok := after[tag]; ok && now != id {
			out[tag] = id
		}
	}
	return out
}

// imageTags maps every tag in Docker to its image ID.
func (r *Runtime) imageTags(ctx context.Context) (map[string]string, error) {
	list, err := r.docker.ImageList(ctx, image.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: list images on %s: %w", ErrUnavailable, r.cfg.MachineName, err)
	}
	out := map[string]string{}
	for _, img := range list {
		for _, tag := range img.RepoTags {
			if tag != "<none>:<none>" {
				out[tag] = img.ID
			}
		}
	}
	return out, nil
}

// ShortID is an image or container ID as Docker shows it: the first 12
// hex digits, without "sha256:".
func ShortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func (r *Runtime) loadImage(ctx context.Context, tarball io.Reader) (string, error) {
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
