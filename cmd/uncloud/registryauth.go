package main

import (
	"fmt"

	"github.com/docker/cli/cli/config"

	"github.com/uncloud-mesh/uncloud/api"
)

// Registry credentials come from the user's Docker configuration
// (~/.docker/config.json or $DOCKER_CONFIG, with its credential helpers),
// read through Docker's own config package, so `docker login` is all the
// login uncloud needs. Only the entry for the registries a command's
// images come from is sent, with that one call.

// dockerCredentials reads the user's Docker configuration once per command.
type dockerCredentials struct {
	dir string // "" means Docker's default (DOCKER_CONFIG or ~/.docker)
}

// forImage is the user's credentials for image's registry, or nil when
// they have none (an anonymous pull).
func (d dockerCredentials) forImage(image string) (*api.RegistryAuth, error) {
	host, err := api.RegistryHost(image)
	if err != nil {
		return nil, err
	}
	return d.forHost(host)
}

func (d dockerCredentials) forHost(host string) (*api.RegistryAuth, error) {
	cf, err := config.Load(d.dir)
	if err != nil {
		return nil, fmt.Errorf("read Docker's credentials: %w", err)
	}
	ac, err := cf.GetAuthConfig(host)
	if err != nil {
		return nil, fmt.Errorf("read Docker's credentials for %s (credential helper): %w", host, err)
	}
	a := &api.RegistryAuth{ServerAddress: host, Username: ac.Username, Password: ac.Password,
		IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken}
	if a.Empty() {
		return nil, nil
	}
	return a, nil
}

// forImages are the credentials for each registry of images, by registry
// host; registries without credentials are left out.
func (d dockerCredentials) forImages(images []string) (map[string]api.RegistryAuth, error) {
	out := map[string]api.RegistryAuth{}
	for _, img := range images {
		host, err := api.RegistryHost(img)
		if err != nil {
			return nil, err
		}
		if _, done := out[host]; done {
			continue
		}
		a, err := d.forHost(host)
		if err != nil {
			return nil, err
		}
		if a != nil {
			out[host] = *a
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
