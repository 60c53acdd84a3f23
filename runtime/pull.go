package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/errdefs"
	"github.com/opencontainers/go-digest"
)

// Pulls through this machine's Docker, and the pin: the exact image a
// service runs. A tag is resolved once, when a service is run or
// deployed, to the registry's manifest digest (or, for an image no
// registry knows, to its local image ID); every replica is then made from
// that pin, so a tag moved meanwhile cannot make two replicas differ.

// PullPolicy is when a machine pulls: Compose's pull_policy values.
type PullPolicy string

const (
	PullMissing PullPolicy = "missing" // pull only what the machine lacks (the default)
	PullAlways  PullPolicy = "always"  // ask the registry every time
	PullNever   PullPolicy = "never"   // use what the machine has, or fail
)

// ParsePullPolicy accepts the policies, "" as missing, and Compose's
// spellings if_not_present and build (taken as missing: uncloud builds
// nothing).
func ParsePullPolicy(s string) (PullPolicy, error) {
	switch s {
	case "", "missing", "if_not_present", "build":
		return PullMissing, nil
	case "always", "daily", "weekly":
		return PullAlways, nil
	case "never":
		return PullNever, nil
	}
	return "", fmt.Errorf("%w: pull policy %q is not missing, always or never", ErrBadSpec, s)
}

// ErrPull is a pull or a resolution that the registry or Docker refused;
// the message carries the registry's own words.
var ErrPull = errors.New("pull failed")

// Resolved is what a reference resolved to on one machine.
type Resolved struct {
	// Pin is what containers are made from: name@sha256:… (a registry
	// manifest digest) or sha256:… (a local image ID).
	Pin string
	// Digest is the manifest digest, empty for a local-only image.
	Digest string
	// From says where the answer came from: "registry" or "local".
	From string
	// Warning is set when the registry was asked and could not answer,
	// and the local image was used instead.
	Warning string
}

// ResolveOptions say how to resolve.
type ResolveOptions struct {
	Policy PullPolicy
	// RegistryFirst asks the registry even when the image is here
	// (deploy re-resolves a moving tag; run with PullAlways does too).
	RegistryFirst bool
	// Auth is the X-Registry-Auth header value, "" for anonymous.
	Auth string
}

// resolveTimeout bounds one question to a registry.
const resolveTimeout = 30 * time.Second

// Resolve turns ref into a pin on this machine.
func (r *Runtime) Resolve(ctx context.Context, ref string, o ResolveOptions) (Resolved, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return Resolved{}, fmt.Errorf("%w: image %q: %v", ErrBadSpec, ref, err)
	}
	if c, ok := named.(reference.Canonical); ok {
		return Resolved{Pin: reference.FamiliarString(c), Digest: c.Digest().String(), From: "reference"}, nil
	}
	local, localErr := r.localPin(ctx, ref, named)
	if localErr != nil && !errors.Is(localErr, ErrImageNotFound) {
		return Resolved{}, localErr
	}
	haveLocal := localErr == nil
	if o.Policy == PullNever {
		if !haveLocal {
			return Resolved{}, fmt.Errorf("%w: %q is not in Docker on %s and the pull policy is never", ErrImageNotFound, ref, r.cfg.MachineName)
		}
		return local, nil
	}
	if haveLocal && !o.RegistryFirst && o.Policy != PullAlways {
		return local, nil
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	di, err := r.docker.DistributionInspect(rctx, reference.FamiliarString(reference.TagNameOnly(named)), o.Auth)
	if err != nil {
		if errdefs.IsUnavailable(err) || errors.Is(err, context.Canceled) {
			return Resolved{}, fmt.Errorf("%w: resolve %q on %s: %w", ErrUnavailable, ref, r.cfg.MachineName, err)
		}
		regErr := fmt.Errorf("%w: %s asked the registry for %q: %s", ErrPull, r.cfg.MachineName, ref, registryWords(err))
		if haveLocal && o.Policy != PullAlways {
			local.Warning = regErr.Error() + "; using the image this machine has"
			return local, nil
		}
		return Resolved{}, regErr
	}
	pinned, err := reference.WithDigest(reference.TrimNamed(named), di.Descriptor.Digest)
	if err != nil {
		return Resolved{}, fmt.Errorf("%w: image %q: registry digest %q: %v", ErrPull, ref, di.Descriptor.Digest, err)
	}
	return Resolved{Pin: reference.FamiliarString(pinned), Digest: di.Descriptor.Digest.String(), From: "registry"}, nil
}

// localPin pins the image this machine has under ref: by its registry
// digest for that repository when Docker knows one (it pulled it), by its
// ID otherwise (it was pushed or built here).
func (r *Runtime) localPin(ctx context.Context, ref string, named reference.Named) (Resolved, error) {
	img, err := r.docker.ImageInspect(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return Resolved{}, fmt.Errorf("%w: %q is not in Docker on %s", ErrImageNotFound, ref, r.cfg.MachineName)
		}
		return Resolved{}, fmt.Errorf("%w: inspect image %q: %w", ErrUnavailable, ref, err)
	}
	for _, rd := range img.RepoDigests {
		c, err := reference.ParseNormalizedNamed(rd)
		if err != nil {
			continue
		}
		if cd, ok := c.(reference.Canonical); ok && c.Name() == named.Name() {
			return Resolved{Pin: reference.FamiliarString(cd), Digest: cd.Digest().String(), From: "local"}, nil
		}
	}
	return Resolved{Pin: img.ID, From: "local"}, nil
}

// registryWords is the registry's answer without Docker's wrapping, with
// a hint where the answer is about credentials.
func registryWords(err error) string {
	s := strings.TrimPrefix(err.Error(), "Error response from daemon: ")
	low := strings.ToLower(s)
	if strings.Contains(low, "unauthorized") || strings.Contains(low, "authentication required") || strings.Contains(low, "denied") {
		s += " (uncloud sends the credentials that 'docker login' stored where the CLI runs; check them there)"
	}
	return s
}

// HasImage says whether Docker here has the image named by pin (a
// name@digest, a local ID, or a plain reference).
func (r *Runtime) HasImage(ctx context.Context, pin string) (bool, error) {
	_, err := r.docker.ImageInspect(ctx, pin)
	switch {
	case err == nil:
		return true, nil
	case errdefs.IsNotFound(err):
		return false, nil
	}
	return false, fmt.Errorf("%w: inspect image %q: %w", ErrUnavailable, pin, err)
}

// PullStatus is how far a pull is.
type PullStatus struct {
	Layers, LayersDone int
	Bytes, Total       int64
	// Digest is the manifest digest Docker reported, once it did.
	Digest string
}

// Pull brings pin into Docker here, unless policy says otherwise; present
// is true when nothing had to be pulled. progress, when not nil, gets the
// pull's state now and then (at most every 200 ms, and at each layer's
// end). A pin that is a local image ID cannot be pulled: no registry
// knows it.
func (r *Runtime) Pull(ctx context.Context, pin string, policy PullPolicy, auth string, progress func(PullStatus)) (present bool, err error) {
	if policy != PullAlways {
		have, err := r.HasImage(ctx, pin)
		if err != nil {
			return false, err
		}
		if have {
			return true, nil
		}
		if policy == PullNever {
			return false, fmt.Errorf("%w: %q is not in Docker on %s and the pull policy is never", ErrImageNotFound, pin, r.cfg.MachineName)
		}
	}
	if _, err := digest.Parse(pin); err == nil {
		return false, fmt.Errorf("%w: %s is a local image (no registry knows it) and %s does not have it: send it with 'uncloud image push IMAGE -m %s'",
			ErrImageNotFound, ShortID(pin), r.cfg.MachineName, r.cfg.MachineName)
	}
	rc, err := r.docker.ImagePull(ctx, pin, image.PullOptions{RegistryAuth: auth})
	if err != nil {
		if errdefs.IsUnavailable(err) {
			return false, fmt.Errorf("%w: pull %s on %s: %w", ErrUnavailable, pin, r.cfg.MachineName, err)
		}
		return false, fmt.Errorf("%w: %s: pull %s: %s", ErrPull, r.cfg.MachineName, pin, registryWords(err))
	}
	defer rc.Close()
	if err := readPull(rc, progress); err != nil {
		return false, fmt.Errorf("%w: %s: pull %s: %s", ErrPull, r.cfg.MachineName, pin, err)
	}
	return false, nil
}

// pullMessage is one line of Docker's pull answer (a JSON message stream).
type pullMessage struct {
	ID             string `json:"id"`
	Status         string `json:"status"`
	ProgressDetail struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
	} `json:"progressDetail"`
	Error       string `json:"error"`
	ErrorDetail struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// layerState is one layer of a pull.
type layerState struct {
	current, total int64
	done           bool
}

// maxPullLayers bounds what a pull's answer can make this agent keep.
const maxPullLayers = 1024

// readPull follows a pull's messages to the end; an error message ends it.
func readPull(rc io.Reader, progress func(PullStatus)) error {
	dec := json.NewDecoder(rc)
	layers := map[string]*layerState{}
	var order []string
	var digestSeen string
	var last time.Time
	report := func(force bool) {
		if progress == nil || (!force && time.Since(last) < 200*time.Millisecond) {
			return
		}
		last = time.Now()
		s := PullStatus{Layers: len(order), Digest: digestSeen}
		for _, id := range order {
			l := layers[id]
			if l.done {
				s.LayersDone++
			}
			s.Bytes += l.current
			s.Total += l.total
		}
		progress(s)
	}
	for {
		var m pullMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			report(true)
			return nil
		} else if err != nil {
			return fmt.Errorf("read Docker's answer: %w", err)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
		if rest, ok := strings.CutPrefix(m.Status, "Digest: "); ok {
			digestSeen = strings.TrimSpace(rest)
			continue
		}
		if m.ID == "" || !isLayerStatus(m.Status) {
			continue
		}
		l := layers[m.ID]
		if l == nil {
			if len(order) >= maxPullLayers {
				continue
			}
			l = &layerState{}
			layers[m.ID] = l
			order = append(order, m.ID)
		}
		force := false
		switch m.Status {
		case "Downloading":
			l.current, l.total = m.ProgressDetail.Current, max(l.total, m.ProgressDetail.Total)
		case "Download complete", "Verifying Checksum":
			l.current = l.total
		case "Pull complete", "Already exists":
			l.current, l.done, force = l.total, true, true
		}
		report(force)
	}
}

func isLayerStatus(s string) bool {
	switch s {
	case "Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum", "Download complete",
		"Extracting", "Pull complete", "Already exists":
		return true
	}
	return false
}
