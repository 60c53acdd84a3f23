package runtime

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
)

// What `uncloud image ls` sees of one machine's Docker: its images and
// which containers use each. The answer crosses the machine API, so every
// part of it is bounded here, where it is made.

// Bounds of one machine's image listing.
const (
	// MaxListedImages is the most images one listing names; a machine
	// with more says Truncated.
	MaxListedImages = 2000
	// MaxImageNames is the most tags, and the most digests, listed per
	// image.
	MaxImageNames = 32
	// MaxImageUsers is the most uncloud containers listed per image;
	// InUse still counts them all.
	MaxImageUsers = 64
)

// Image is one image in this machine's Docker and what uses it.
type Image struct {
	ID      string    `json:"id"`
	Tags    []string  `json:"tags,omitempty"`    // repo:tag names
	Digests []string  `json:"digests,omitempty"` // repo@sha256:… the image came from
	Size    int64     `json:"size"`              // bytes, shared layers included
	Created time.Time `json:"created,omitzero"`
	// Users are the uncloud containers (of this machine, running or not)
	// made from the image, at most MaxImageUsers of InUse.
	Users []ImageUser `json:"users,omitempty"`
	InUse int         `json:"in_use,omitempty"`
	// Others counts containers that uncloud did not run that use it.
	Others int `json:"others,omitempty"`
}

// Dangling is an image without a tag (it may still have a digest), as
// Docker's `image prune` counts them: without --all it removes only these.
func (i Image) Dangling() bool { return len(i.Tags) == 0 }

// Used says whether any container, uncloud's or not, uses the image.
func (i Image) Used() bool { return i.InUse > 0 || i.Others > 0 }

// ImageUser is an uncloud container made from an image.
type ImageUser struct {
	Service   string `json:"service"`
	Container string `json:"container"`
	State     string `json:"state"` // Docker's: running, exited, …
}

// ImageList is a machine's images, sorted by first name then ID.
type ImageList struct {
	Images []Image `json:"images"`
	// Truncated says the machine has more than MaxListedImages images.
	Truncated bool `json:"truncated,omitempty"`
}

// Images lists this machine's images (the heads Docker lists, not the
// intermediate layers of old builds) with the containers that use each.
func (r *Runtime) Images(ctx context.Context) (ImageList, error) {
	imgs, cs, err := r.imagesAndContainers(ctx, false)
	if err != nil {
		return ImageList{}, err
	}
	out := imageUsage(imgs, cs, r.cfg.MachineID)
	if len(out.Images) > MaxListedImages {
		out.Images, out.Truncated = out.Images[:MaxListedImages], true
	}
	return out, nil
}

// imagesAndContainers lists the images (with sharedSize, what Docker
// says each shares with others, where it can) and every container.
func (r *Runtime) imagesAndContainers(ctx context.Context, sharedSize bool) ([]image.Summary, []container.Summary, error) {
	imgs, err := r.docker.ImageList(ctx, image.ListOptions{SharedSize: sharedSize})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: list images on %s: %w", ErrUnavailable, r.cfg.MachineName, err)
	}
	cs, err := r.docker.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: list containers on %s: %w", ErrUnavailable, r.cfg.MachineName, err)
	}
	return imgs, cs, nil
}

// imageUsage joins Docker's images with the containers that use them.
// A container is uncloud's when it carries this machine's ID in
// LabelMachine (as List counts them); any other container is one of
// Others. Containers are matched by image ID, not by the name they were
// made from: a tag may have moved since.
func imageUsage(imgs []image.Summary, cs []container.Summary, machineID string) ImageList {
	var out ImageList
	byID := make(map[string]int, len(imgs))
	for _, s := range imgs {
		img := Image{ID: s.ID, Tags: realNames(s.RepoTags, "<none>:<none>"),
			Digests: realNames(s.RepoDigests, "<none>@<none>"), Size: s.Size}
		if s.Created > 0 {
			img.Created = time.Unix(s.Created, 0).UTC()
		}
		byID[s.ID] = len(out.Images)
		out.Images = append(out.Images, img)
	}
	for _, c := range cs {
		i, ok := byID[c.ImageID]
		if !ok {
			continue
		}
		img := &out.Images[i]
		if c.Labels[LabelMachine] != machineID || machineID == "" {
			img.Others++
			continue
		}
		img.InUse++
		if len(img.Users) < MaxImageUsers {
			name := ""
			if len(c.Names) > 0 {
				name = strings.TrimPrefix(c.Names[0], "/")
			}
			img.Users = append(img.Users, ImageUser{Service: c.Labels[LabelService], Container: name, State: c.State})
		}
	}
	for i := range out.Images {
		sort.Slice(out.Images[i].Users, func(a, b int) bool {
			ua, ub := out.Images[i].Users[a], out.Images[i].Users[b]
			if ua.Service != ub.Service {
				return ua.Service < ub.Service
			}
			return ua.Container < ub.Container
		})
	}
	sort.Slice(out.Images, func(a, b int) bool {
		na, nb := firstName(out.Images[a]), firstName(out.Images[b])
		if na != nb {
			return na < nb
		}
		return out.Images[a].ID < out.Images[b].ID
	})
	return out
}

// realNames drops Docker's placeholder for "no name", sorts, and keeps
// at most MaxImageNames.
func realNames(names []string, none string) []string {
	var out []string
	for _, n := range names {
		if n != none && n != "" {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	if len(out) > MaxImageNames {
		out = out[:MaxImageNames]
	}
	return out
}

// displayName is how a message names an image: its first name, else its
// short ID.
func displayName(i Image) string {
	if n := firstName(i); n != "~" {
		return n
	}
	return ShortID(i.ID)
}

func firstName(i Image) string { return ImageSortName(i.Tags, i.Digests) }

// ImageSortName is what image listings sort by: the first tag, else the
// first digest, else "~", which is after every character a name can
// hold, so unnamed images come last.
func ImageSortName(tags, digests []string) string {
	switch {
	case len(tags) > 0:
		return tags[0]
	case len(digests) > 0:
		return digests[0]
	}
	return "~"
}
