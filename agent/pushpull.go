package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/oci"
	"github.com/uncloud-mesh/uncloud/runtime"
)

// stage pushes local image ref from this machine's Docker into its
// registry (Docker sends only the blobs the registry lacks) and returns
// what a target needs to pull it. Docker's temporary names for the push
// are removed again.
func (pr *pushRegistry) stage(ctx context.Context, rt *runtime.Runtime, ref string,
	progress func(runtime.PushProgress)) (api.ImagePullFrom, error) {
	pr.collect()
	tag, err := runtime.TagOf(ref)
	if err != nil {
		return api.ImagePullFrom{}, err
	}
	id, err := rt.ImageID(ctx, ref)
	if err != nil {
		return api.ImagePullFrom{}, err
	}
	sess, err := pr.reg.Open(nil, nil)
	if err != nil {
		return api.ImagePullFrom{}, err
	}
	defer sess.Close()
	target := fmt.Sprintf("127.0.0.1:%d/%s:%s", pr.port, sess.Repo, tag)
	start := time.Now()
	digest, err := rt.PushTo(ctx, ref, target, progress)
	if err != nil {
		return api.ImagePullFrom{}, err
	}
	m, err := sess.Manifest(ctx, tag)
	if err != nil {
		return api.ImagePullFrom{}, err
	}
	if digest != "" && digest != m.Digest {
		return api.ImagePullFrom{}, fmt.Errorf("Docker pushed manifest %s, the registry has %s", digest, m.Digest)
	}
	pr.log.Info("image staged for a push", "image", ref, "digest", m.Digest, "took", time.Since(start).Round(time.Millisecond))
	return api.ImagePullFrom{Source: pr.self, Image: ref, ID: id, Digest: m.Digest, MediaType: m.MediaType, Manifest: m.Bytes}, nil
}

// imageManifest is a checked manifest: its blobs with their sizes.
type imageManifest struct {
	config v1.Descriptor
	layers []v1.Descriptor
	sizes  map[string]int64 // every blob: config and layers
	total  int64            // the layers' bytes
}

// checkManifest checks a manifest another machine sent: its digest, that
// it is one image (not a list), and the bounds on its layers and bytes.
func (pr *pushRegistry) checkManifest(req api.ImagePullFrom) (imageManifest, error) {
	var im imageManifest
	if len(req.Manifest) > oci.MaxManifestBytes {
		return im, fmt.Errorf("the manifest is more than %d bytes", oci.MaxManifestBytes)
	}
	if _, err := oci.ParseDigest(req.Digest); err != nil {
		return im, err
	}
	h, _, _ := v1.SHA256(bytes.NewReader(req.Manifest))
	if h.String() != req.Digest {
		return im, fmt.Errorf("%w: the manifest's bytes are %s, not %s", oci.ErrDigestMismatch, h, req.Digest)
	}
	mt := types.MediaType(req.MediaType)
	if mt.IsIndex() {
		return im, fmt.Errorf("image %s is a list of platforms; push one platform's image", req.Image)
	}
	m, err := v1.ParseManifest(bytes.NewReader(req.Manifest))
	if err != nil {
		return im, fmt.Errorf("manifest of %s: %w", req.Image, err)
	}
	if len(m.Layers) > maxImageLayers {
		return im, fmt.Errorf("image %s has %d layers, more than the %d this machine takes", req.Image, len(m.Layers), maxImageLayers)
	}
	if m.Config.Size <= 0 || m.Config.Size > maxConfigBytes {
		return im, fmt.Errorf("image %s: config of %d bytes", req.Image, m.Config.Size)
	}
	im = imageManifest{config: m.Config, layers: m.Layers, sizes: map[string]int64{m.Config.Digest.String(): m.Config.Size}}
	for _, l := range m.Layers {
		if l.Size < 0 {
			return im, fmt.Errorf("image %s: layer %s of %d bytes", req.Image, l.Digest, l.Size)
		}
		if _, err := oci.ParseDigest(l.Digest.String()); err != nil {
			return im, err
		}
		im.sizes[l.Digest.String()] = l.Size
		im.total += l.Size
	}
	if pr.maxImage > 0 && im.total > pr.maxImage {
		return im, fmt.Errorf("the image is %d MiB, more than the %d MiB this machine accepts in one push (its agent's --image-max-bytes)",
			im.total>>20, pr.maxImage>>20)
	}
	return im, nil
}

// pullFrom pulls an image staged on req.Source: its manifest comes with
// the request, its blobs through this machine's registry, which fetches
// those the Docker here asks for (the ones it lacks) from the source.
// On success the image has its name here, the temporary one is gone and
// so are the fetched blobs (Docker's layer store has them now); a pull
// that fails leaves no image under the name and keeps the blobs that
// arrived whole, for the next push to resume with.
//
// cleanup, when not nil, is what is left to do once the caller has said
// the final word.
func (pr *pushRegistry) pullFrom(ctx context.Context, rt *runtime.Runtime, machine string, req api.ImagePullFrom,
	emit func(api.ImageProgress)) (_ api.ImageProgress, cleanup func(), _ error) {
	pr.collect()
	im, err := pr.checkManifest(req)
	if err != nil {
		return api.ImageProgress{}, nil, err
	}
	fetch := func(ctx context.Context, digest string) (io.ReadCloser, error) {
		return pr.calls.RegistryBlob(ctx, req.Source, digest)
	}
	sess, err := pr.reg.Open(fetch, im.sizes)
	if err != nil {
		return api.ImageProgress{}, nil, err
	}
	defer sess.Close()
	if err := pr.checkPlatform(ctx, rt, sess, im, machine, req.Image); err != nil {
		return api.ImageProgress{}, nil, err
	}
	id := im.config.Digest.String()
	have, err := rt.ImageID(ctx, req.Image)
	switch {
	case err == nil && (have == id || have == req.Digest):
		// (An engine with the containerd image store names images by
		// their manifest's digest, the classic one by their config's.)
		return api.ImageProgress{Status: "present", Digest: req.Digest}, func() { pr.dropFetched(im) }, nil
	case err == nil && !req.Force:
		return api.ImageProgress{}, nil, fmt.Errorf("%w on %s: %s is image %s here; push with --force to replace it",
			runtime.ErrImageRetag, machine, req.Image, runtime.ShortID(have))
	case err != nil && !errors.Is(err, runtime.ErrImageNotFound):
		return api.ImageProgress{}, nil, err
	}
	if err := sess.PutManifest(ctx, oci.Manifest{MediaType: req.MediaType, Digest: req.Digest, Bytes: req.Manifest}); err != nil {
		return api.ImageProgress{}, nil, err
	}

	pullRef := fmt.Sprintf("127.0.0.1:%d/%s@%s", pr.port, sess.Repo, req.Digest)
	var layersDone atomic.Int64 // as Docker counts them: those it had and those it pulled
	report := func() api.ImageProgress {
		_, fetched := sess.Fetched()
		return api.ImageProgress{Status: "pulling", Layers: len(im.layers), LayersDone: int(layersDone.Load()), Bytes: fetched,
			Total: im.total, Digest: req.Digest}
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		for {
			select {
			case <-tick.C:
				emit(report())
			case <-stop:
				return
			}
		}
	}()
	emit(report())
	start := time.Now()
	pulled, err := rt.PullFrom(ctx, pullRef, func(p runtime.PullStatus) { layersDone.Store(int64(p.LayersDone)) })
	close(stop)
	<-ticked
	// From here the pulled image has its temporary name until it has the
	// real one; removing the temporary name of an image that got no other
	// removes the image, so a refused tag, or a pull that Docker finished
	// just as the push was cancelled, leaves nothing behind.
	untag := func() { rt.Untag(context.WithoutCancel(ctx), pullRef) }
	if err != nil {
		untag()
		if strings.Contains(err.Error(), "verification failed") {
			// A blob here does not match its digest (torn by a power
			// loss: they are checked when they arrive): fetch again.
			pr.dropFetched(im)
		}
		return api.ImageProgress{}, nil, err
	}
	if pulled != id && pulled != req.Digest {
		untag()
		return api.ImageProgress{}, nil, fmt.Errorf("pulled image %s, the manifest says %s", runtime.ShortID(pulled), runtime.ShortID(id))
	}
	if err := rt.TagPushed(ctx, pulled, req.Image, req.Force); err != nil {
		untag()
		return api.ImageProgress{}, nil, err
	}
	// The image has its name: the caller may say so before the temporary
	// name and the fetched blobs (Docker's layer store has them) go.
	cleanup = func() {
		pr.dropFetched(im) // first: the disk, while Docker untags slowly
		untag()
	}
	blobs, fetched := sess.Fetched()
	pr.log.Info("image pulled from another machine", "image", req.Image, "source", req.Source, "blobs_fetched", blobs,
		"bytes_fetched", fetched, "took", time.Since(start).Round(time.Millisecond))
	return api.ImageProgress{Status: "done", Layers: len(im.layers), LayersDone: len(im.layers), Bytes: fetched,
		Total: im.total, Digest: req.Digest}, cleanup, nil
}

// checkPlatform refuses an image made for another platform than this
// machine's, naming both.
func (pr *pushRegistry) checkPlatform(ctx context.Context, rt *runtime.Runtime, sess *oci.Session, im imageManifest, machine, image string) error {
	rc, err := sess.FetchBlob(ctx, im.config.Digest.String())
	if err != nil {
		return fmt.Errorf("config of %s: %w", image, err)
	}
	raw, err := io.ReadAll(io.LimitReader(rc, maxConfigBytes+1))
	rc.Close()
	if err != nil {
		return fmt.Errorf("config of %s: %w", image, err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("config of %s: %w", image, err)
	}
	here, err := pr.platformOf(ctx, rt)
	if err != nil {
		return err
	}
	img := runtime.NormalizePlatform(cfg.OS, cfg.Architecture, cfg.Variant)
	if osArch(img) != osArch(here) {
		return fmt.Errorf("image %s is %s, machine %s is %s", image, img, machine, here)
	}
	return nil
}

// osArch is os/arch without the variant.
func osArch(p string) string {
	parts := strings.SplitN(p, "/", 3)
	if len(parts) < 2 {
		return p
	}
	return parts[0] + "/" + parts[1]
}

// platformOf is the engine's platform, asked once (docker info is slow
// and a machine's platform does not change under a running agent).
func (pr *pushRegistry) platformOf(ctx context.Context, rt *runtime.Runtime) (string, error) {
	if p := pr.platform.Load(); p != nil {
		return *p, nil
	}
	p, err := rt.Platform(ctx)
	if err != nil {
		return "", err
	}
	pr.platform.Store(&p)
	return p, nil
}

// dropFetched deletes the blobs fetched for an image that Docker has now.
func (pr *pushRegistry) dropFetched(im imageManifest) {
	for d := range im.sizes {
		if err := pr.reg.Store().Delete(oci.Fetched, d); err != nil {
			pr.log.Warn("fetched blob not removed after the pull", "digest", d, "err", err)
		}
	}
}
