package api

import (
	"fmt"
	"log/slog"

	"github.com/distribution/reference"

	"github.com/docker/docker/api/types/registry"
)

// RegistryAuth is the CLI user's credentials for one registry, read from
// their Docker configuration. It travels with the one call that needs it
// (to the agent, then over the machine API to the machines that pull) and
// is used for that pull only: never stored, replicated, labelled or
// logged. Its String and LogValue say which registry, never the secret,
// so a stray %v or slog attribute cannot print it.
type RegistryAuth struct {
	ServerAddress string `json:"serveraddress,omitempty"`
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	// IdentityToken is an OAuth refresh token (`docker login` to some
	// registries stores one instead of a password).
	IdentityToken string `json:"identitytoken,omitempty"`
	// RegistryToken is a bearer token for the registry itself.
	RegistryToken string `json:"registrytoken,omitempty"`
}

// Empty says whether a carries no credential at all.
func (a *RegistryAuth) Empty() bool {
	return a == nil || a.Username == "" && a.Password == "" && a.IdentityToken == "" && a.RegistryToken == ""
}

func (a RegistryAuth) String() string {
	return fmt.Sprintf("credentials for %s (redacted)", a.ServerAddress)
}

// GoString keeps %#v from printing the fields.
func (a RegistryAuth) GoString() string { return a.String() }

// LogValue implements slog.LogValuer.
func (a RegistryAuth) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Header is the value of Docker's X-Registry-Auth header for a, or "" when
// a is empty (an anonymous pull).
func (a *RegistryAuth) Header() (string, error) {
	if a.Empty() {
		return "", nil
	}
	h, err := registry.EncodeAuthConfig(registry.AuthConfig{ServerAddress: a.ServerAddress, Username: a.Username,
		Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken})
	if err != nil {
		return "", fmt.Errorf("encode credentials for %s: %w", a.ServerAddress, err)
	}
	return h, nil
}

// RegistryHost is the registry an image reference pulls from, as Docker
// names it: "docker.io" for Docker Hub, else the reference's domain
// (host[:port]).
func RegistryHost(image string) (string, error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", fmt.Errorf("%w: image %q: %v", ErrBadRequest, image, err)
	}
	return reference.Domain(named), nil
}
