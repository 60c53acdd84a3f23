package runtime

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/pkg/jsonmessage"
)

// The Docker side of `uncloud image push` between machines: the source's
// Docker pushes to its agent's loopback registry, each target's Docker
// pulls from its own (package oci owns the registry). Docker treats
// 127.0.0.0/8 as an insecure registry by default, so no TLS and no
// configuration is needed on either side.

// emptyAuth is the X-Registry-Auth of a registry that wants none.
var emptyAuth = base64.URLEncoding.EncodeToString([]byte("{}"))

// TagOf is the tag of a pushed name ("latest" when it has none), or an
// error for what Docker could not push under a tag (an ID, a digest).
func TagOf(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("%w: image %q: %v", ErrBadSpec, ref, err)
	}
	if _, ok := named.(reference.Digested); ok {
		return "", fmt.Errorf("%w: image %q is a digest; push it by its name and tag", ErrBadSpec, ref)
	}
	return reference.TagNameOnly(named).(reference.Tagged).Tag(), nil
}

// PushProgress is what Docker says of one layer while it pushes.
type PushProgress struct {
	Layer   string // Docker's short layer ID
	Status  string // e.g. Pushing, Layer already exists, Downloading, Already exists, Pull complete
	Current int64
	Total   int64
}

// PushTo pushes local image ref to target (a name in a registry, with
// tag), which it tags for the push and untags afterwards, and returns the
// manifest digest Docker reports.
func (r *Runtime) PushTo(ctx context.Context, ref, target string, progress func(PushProgress)) (string, error) {
	if _, err := r.ImageID(ctx, ref); err != nil {
		return "", err
	}
	if err := r.docker.ImageTag(ctx, ref, target); err != nil {
		return "", fmt.Errorf("tag %s as %s on %s: %w", ref, target, r.cfg.MachineName, err)
	}
	// The temporary names go once the push is over, in the background:
	// nothing waits for them.
	var untag []string
	defer func() {
		go func() {
			for _, n := range untag {
				r.untag(context.WithoutCancel(ctx), n)
			}
		}()
	}()
	untag = append(untag, target)
	rc, err := r.docker.ImagePush(ctx, target, image.PushOptions{RegistryAuth: emptyAuth})
	if err != nil {
		return "", fmt.Errorf("push %s to this machine's registry on %s: %w", ref, r.cfg.MachineName, err)
	}
	defer rc.Close()
	var digest string
	err = readJSONMessages(rc, func(m jsonmessage.JSONMessage) {
		if m.Aux != nil {
			var aux struct{ Digest string }
			if json.Unmarshal(*m.Aux, &aux) == nil && aux.Digest != "" {
				digest = aux.Digest
			}
		}
		if progress != nil && m.ID != "" {
			p := PushProgress{Layer: m.ID, Status: m.Status}
			if m.Progress != nil {
				p.Current, p.Total = m.Progress.Current, m.Progress.Total
			}
			progress(p)
		}
	})
	if err != nil {
		return "", fmt.Errorf("push %s to this machine's registry on %s: %w", ref, r.cfg.MachineName, err)
	}
	if digest != "" {
		// The push recorded target@digest as well; it goes too.
		named, _ := reference.ParseNormalizedNamed(target)
		untag = append(untag, named.Name()+"@"+digest)
	}
	return digest, nil
}

// PullFrom pulls ref (a name in a registry, by digest) into Docker and
// returns the image ID; progress is readPull's.
func (r *Runtime) PullFrom(ctx context.Context, ref string, progress func(PullStatus)) (string, error) {
	rc, err := r.docker.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: emptyAuth})
	if err != nil {
		return "", fmt.Errorf("pull %s on %s: %w", ref, r.cfg.MachineName, err)
	}
	defer rc.Close()
	if err := readPull(rc, progress); err != nil {
		return "", fmt.Errorf("pull %s on %s: %w", ref, r.cfg.MachineName, err)
	}
	return r.ImageID(ctx, ref)
}

// TagPushed gives image id the name ref. Unless force, a ref that names
// another image here is left as it is (ErrImageRetag): another machine's
// deployment may have put it there.
func (r *Runtime) TagPushed(ctx context.Context, id, ref string, force bool) error {
	have, err := r.ImageID(ctx, ref)
	switch {
	case err == nil && have == id:
		return nil
	case err == nil && !force:
		return fmt.Errorf("%w on %s: %s is image %s here; push with --force to replace it",
			ErrImageRetag, r.cfg.MachineName, ref, ShortID(have))
	case err != nil && !errors.Is(err, ErrImageNotFound):
		return err
	}
	if err := r.docker.ImageTag(ctx, id, ref); err != nil {
		return fmt.Errorf("tag %s as %s on %s: %w", ShortID(id), ref, r.cfg.MachineName, err)
	}
	return nil
}

// Untag removes the name ref; the image stays while it has other names.
func (r *Runtime) Untag(ctx context.Context, ref string) { r.untag(ctx, ref) }

func (r *Runtime) untag(ctx context.Context, ref string) {
	if _, err := r.docker.ImageRemove(ctx, ref, image.RemoveOptions{}); err != nil && !strings.Contains(err.Error(), "No such image") {
		r.log.Warn("temporary image name not removed", "image", ref, "err", err)
	}
}

// Platform is the engine's os/architecture[/variant], as images name it.
func (r *Runtime) Platform(ctx context.Context) (string, error) {
	info, err := r.docker.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: docker info on %s: %w", ErrUnavailable, r.cfg.MachineName, err)
	}
	return NormalizePlatform(info.OSType, info.Architecture, ""), nil
}

// NormalizePlatform says a platform the way image configs do: uname's
// machine names (x86_64, aarch64, armv7l) become GOARCH names.
func NormalizePlatform(os, arch, variant string) string {
	switch arch {
	case "x86_64", "x86-64":
		arch = "amd64"
	case "aarch64", "arm64":
		arch, variant = "arm64", strings.TrimPrefix(variant, "v8")
	case "armv7l", "armhf":
		arch, variant = "arm", "v7"
	case "armv6l", "armel":
		arch, variant = "arm", "v6"
	case "i386", "i686":
		arch = "386"
	}
	p := os + "/" + arch
	if variant != "" {
		p += "/" + variant
	}
	return p
}

// readJSONMessages reads Docker's message stream; a message with an
// error ends it with that error.
func readJSONMessages(rd io.Reader, each func(jsonmessage.JSONMessage)) error {
	dec := json.NewDecoder(rd)
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read Docker's answer: %w", err)
		}
		if m.Error != nil {
			return errors.New(m.Error.Message)
		}
		if m.ErrorMessage != "" {
			return errors.New(m.ErrorMessage)
		}
		each(m)
	}
}
