package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// labRegistry is a private registry for a containerLab's machines to pull
// from: Debian's docker-registry with TLS and a password (lab.Registry) in
// a lab host of its own, "reg", whose own Docker Engine plays the
// developer's machine that builds and pushes, so every machine of the
// network really pulls what it runs.
type labRegistry struct {
	*lab.Registry
	docker         *lab.Docker
	user, password string
	// config is a DOCKER_CONFIG directory with the login, as `docker
	// login` leaves it.
	config string
}

// startRegistry adds the registry host to c's lab and starts its engine
// and registry, with user alice and a random password.
func (c *containerLab) startRegistry(ctx context.Context, t *testing.T) *labRegistry {
	t.Helper()
	h, err := c.lab.AddHost(ctx, "reg", lab.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := h.StartDocker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	r := &labRegistry{docker: d, user: "alice", password: "pw-" + randomHex(t, 12)}
	r.Registry, err = h.StartRegistry(ctx, lab.RegistryOptions{Users: map[string]string{r.user: r.password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Registry.Close)
	r.config = dockerConfigDir(t, r.Addr, r.user, r.password)
	return r
}

// push imports a root file system as ref into the registry host's engine
// and pushes it, returning the manifest digest the registry gave it.
func (r *labRegistry) push(ctx context.Context, t *testing.T, rootfs []byte, ref string) string {
	t.Helper()
	return pushImage(ctx, t, r.docker, rootfs, ref, r.user, r.password)
}

// pushImage imports a root file system as ref into d and pushes it to
// its registry, returning the manifest digest the registry gave it.
func pushImage(ctx context.Context, t *testing.T, d *lab.Docker, rootfs []byte, ref, user, password string) string {
	t.Helper()
	if err := testimage.Import(ctx, d.Client, rootfs, ref); err != nil {
		t.Fatal(err)
	}
	return pushTag(ctx, t, d, ref, user, password)
}

// pushTag pushes the image d has as ref to ref's registry, returning the
// manifest digest the registry gave it.
func pushTag(ctx context.Context, t *testing.T, d *lab.Docker, ref, user, password string) string {
	t.Helper()
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{Username: user, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := d.Client.ImagePush(ctx, ref, image.PushOptions{RegistryAuth: auth})
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	var digest string
	for {
		var m struct {
			Error string `json:"error"`
			Aux   struct {
				Digest string `json:"Digest"`
			} `json:"aux"`
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
		if m.Error != "" {
			t.Fatalf("push %s: %s", ref, m.Error)
		}
		if m.Aux.Digest != "" {
			digest = m.Aux.Digest
		}
	}
	if digest == "" {
		t.Fatalf("push %s: the registry gave no digest", ref)
	}
	return digest
}
