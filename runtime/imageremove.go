package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/errdefs"
)

// Removing images: `uncloud image rm` and `uncloud image prune` on this
// machine. Both go through Docker's own image removal without force
// (except rm --force), so Docker's rules hold on top of uncloud's: an
// image a container uses is never deleted by a prune, whatever raced
// with the listing.

var (
	// ErrImageInUse is a removal refused because an uncloud container
	// of this machine uses the image.
	ErrImageInUse = errors.New("the image is in use")
	// ErrImageRefused is a removal Docker itself refused (a conflict:
	// a running container, or several names and no force).
	ErrImageRefused = errors.New("Docker refused to remove the image")
)

// RemoveImageOptions shape a removal.
type RemoveImageOptions struct {
	// Force removes the image even when uncloud containers use it, and
	// asks Docker to force too (it still keeps an image a running
	// container uses, and says so).
	Force bool
	// Check says whether the removal would be refused, removing nothing.
	Check bool
}

// ImageRemoval is what a removal did on this machine.
type ImageRemoval struct {
	ID       string   `json:"id"` // the image the reference named
	Untagged []string `json:"untagged,omitempty"`
	Deleted  []string `json:"deleted,omitempty"` // image IDs (parents too)
	// Users are the uncloud containers that used it (a forced removal).
	Users []ImageUser `json:"users,omitempty"`
}

// RemoveImage removes the image ref names (a name, an ID or a digest),
// as `docker rmi` would: a name that is one of several loses only that
// name. Unless forced, it is refused with ErrImageInUse when uncloud
// containers here use the image, naming them.
func (r *Runtime) RemoveImage(ctx context.Context, ref string, opts RemoveImageOptions) (ImageRemoval, error) {
	if err := checkImageRef(ref); err != nil {
		return ImageRemoval{}, err
	}
	insp, err := r.docker.ImageInspect(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return ImageRemoval{}, fmt.Errorf("%w: %q is not in Docker on %s", ErrImageNotFound, ref, r.cfg.MachineName)
		}
		return ImageRemoval{}, fmt.Errorf("%w: inspect image %q: %w", ErrUnavailable, ref, err)
	}
	// Only this image's users count: its containers, not every image.
	cs, err := r.docker.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return ImageRemoval{}, fmt.Errorf("%w: list containers on %s: %w", ErrUnavailable, r.cfg.MachineName, err)
	}
	me := imageUsage([]image.Summary{{ID: insp.ID}}, cs, r.cfg.MachineID).Images[0]
	out := ImageRemoval{ID: insp.ID, Users: me.Users}
	if me.InUse > 0 && !opts.Force {
		return out, fmt.Errorf("%w: %s (image %s) is used on %s by %s; remove those first, or remove it with --force",
			ErrImageInUse, ref, ShortID(insp.ID), r.cfg.MachineName, describeUsers(me))
	}
	if opts.Check {
		return out, nil
	}
	resp, err := r.docker.ImageRemove(ctx, ref, image.RemoveOptions{Force: opts.Force, PruneChildren: true})
	switch {
	case errdefs.IsNotFound(err):
		return out, fmt.Errorf("%w: %q is not in Docker on %s", ErrImageNotFound, ref, r.cfg.MachineName)
	case errdefs.IsConflict(err):
		return out, fmt.Errorf("%w on %s: Docker said: %v", ErrImageRefused, r.cfg.MachineName, dockerWords(err))
	case err != nil:
		return out, fmt.Errorf("remove image %q on %s: Docker said: %w", ref, r.cfg.MachineName, err)
	}
	out.Untagged, out.Deleted = deleteResponse(resp)
	return out, nil
}

// maxImageRef bounds an image reference from the network (Docker's
// own limit on a name is 255 bytes; a digest adds 72).
const maxImageRef = 512

func checkImageRef(ref string) error {
	if ref == "" || len(ref) > maxImageRef || strings.ContainsAny(ref, " \t\r\n") {
		return fmt.Errorf("%w: image %q is not a name, ID or digest", ErrBadSpec, clip(ref, 80))
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// describeUsers names who uses an image: "service web (container
// web-1a2b3c, running)", a few of them and how many more.
func describeUsers(img Image) string {
	const shown = 4
	var parts []string
	for i, u := range img.Users {
		if i == shown {
			break
		}
		parts = append(parts, fmt.Sprintf("service %s (container %s, %s)", u.Service, u.Container, u.State))
	}
	if more := img.InUse - len(parts); more > 0 {
		parts = append(parts, fmt.Sprintf("%d more uncloud containers", more))
	}
	return strings.Join(parts, ", ")
}

// dockerWords is Docker's message without the client's wrapping.
func dockerWords(err error) string {
	s := err.Error()
	if _, after, ok := strings.Cut(s, "Error response from daemon: "); ok {
		return after
	}
	return s
}

func deleteResponse(resp []image.DeleteResponse) (untagged, deleted []string) {
	for _, d := range resp {
		if d.Untagged != "" {
			untagged = append(untagged, d.Untagged)
		}
		if d.Deleted != "" {
			deleted = append(deleted, d.Deleted)
		}
	}
	return untagged, deleted
}

// PruneOptions shape a prune.
type PruneOptions struct {
	// All removes every unused image, not only dangling ones (Docker's
	// `image prune -a`).
	All bool `json:"all,omitempty"`
	// DryRun says what would go, removing nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Keep are the pins of the network's services (ContainerSpec
	// ImagePin): an image they name stays even with no container here
	// yet, so a scale-up or a restart elsewhere still finds it.
	Keep []string `json:"keep,omitempty"`
}

// MaxPruneKeep bounds PruneOptions.Keep from the network.
const MaxPruneKeep = 10000

// PruneReport is what a prune removed (or would) on this machine.
type PruneReport struct {
	// Removed are the images removed, as listed before (at most
	// MaxListedImages of Count).
	Removed []Image `json:"removed,omitempty"`
	Count   int     `json:"count"`
	// Failed are candidates Docker kept, with its words (a container
	// made from it meanwhile, say).
	Failed []string `json:"failed,omitempty"`
	// Reclaimed is about how many bytes went: each removed image's size
	// less what Docker says it shares with other images (the whole size
	// where Docker does not say, before Engine 23).
	Reclaimed int64 `json:"reclaimed"`
	DryRun    bool  `json:"dry_run,omitempty"`
}

// PruneImages removes the images no container uses: dangling ones (no
// tag), or with All every unused one. An image used by any container
// here, uncloud's or not, running or stopped, is never a candidate, and
// each removal is Docker's unforced one, so a container made from a
// candidate after the listing still keeps it.
func (r *Runtime) PruneImages(ctx context.Context, opts PruneOptions) (PruneReport, error) {
	imgs, cs, err := r.imagesAndContainers(ctx, true)
	if err != nil {
		return PruneReport{}, err
	}
	unique := map[string]int64{}
	for _, s := range imgs {
		unique[s.ID] = s.Size
		if s.SharedSize > 0 && s.SharedSize <= s.Size {
			unique[s.ID] = s.Size - s.SharedSize
		}
	}
	rep := PruneReport{DryRun: opts.DryRun}
	if len(opts.Keep) > MaxPruneKeep {
		return PruneReport{}, fmt.Errorf("%w: %d images to keep, at most %d", ErrBadSpec, len(opts.Keep), MaxPruneKeep)
	}
	for _, img := range pruneCandidates(imageUsage(imgs, cs, r.cfg.MachineID).Images, opts.All, opts.Keep) {
		if !opts.DryRun {
			if err := r.removeUnused(ctx, img); err != nil {
				if len(rep.Failed) < MaxImageUsers {
					rep.Failed = append(rep.Failed, err.Error())
				}
				continue
			}
		}
		rep.Count++
		if len(rep.Removed) < MaxListedImages {
			rep.Removed = append(rep.Removed, img)
		}
		rep.Reclaimed += unique[img.ID]
	}
	return rep, nil
}

// pruneCandidates are the images a prune removes: no container uses
// them, no service is pinned to them, and they are dangling unless all.
func pruneCandidates(imgs []Image, all bool, keep []string) []Image {
	pinned := map[string]bool{}
	for _, k := range keep {
		pinned[ContainerSpec{ImagePin: k}.PinDigest()] = true
	}
	var out []Image
	for _, img := range imgs {
		if img.Used() || (!all && !img.Dangling()) || keptByPin(img, pinned) {
			continue
		}
		out = append(out, img)
	}
	return out
}

// keptByPin says whether a service's pin names img: by its ID, or by one
// of the registry digests it came with.
func keptByPin(img Image, pinned map[string]bool) bool {
	if pinned[img.ID] {
		return true
	}
	for _, d := range img.Digests {
		if _, dg, ok := strings.Cut(d, "@"); ok && pinned[dg] {
			return true
		}
	}
	return false
}

// removeUnused removes one candidate without force: name by name (the
// last name takes the image with it), or by ID when it has none.
func (r *Runtime) removeUnused(ctx context.Context, img Image) error {
	refs := append(append([]string{}, img.Tags...), img.Digests...)
	if len(refs) == 0 {
		refs = []string{img.ID}
	}
	for _, ref := range refs {
		_, err := r.docker.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true})
		if err != nil && !errdefs.IsNotFound(err) { // gone with an earlier name
			return fmt.Errorf("%s (%s): Docker said: %s", displayName(img), ShortID(img.ID), dockerWords(err))
		}
	}
	return nil
}
