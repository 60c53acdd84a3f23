package record

import (
	"fmt"
	"regexp"
	"time"
)

// SecretsPrefix holds secrets and configs: their content sealed for the
// network's members (package sealing), never in clear.
const SecretsPrefix = "/secrets/"

// KindSecret is a secret's or config's record.
const KindSecret Kind = "secret"

// Secret is a secret or a config (Compose's `secrets:` and `configs:`),
// mounted as a file in the containers of the services that name it. Any
// member may write it: any member can run a deploy.
type Secret struct {
	// Name is the secret's name; configs are named "config.<name>" so the
	// two kinds never collide (SecretKey).
	Name string `json:"name"`
	// Version names the content: a new content gets a new random version,
	// a re-wrap for other machines keeps it. Service specs name it, so
	// new content rolls the services that use it.
	Version string `json:"version"`
	// Data is the content, sealed (package sealing) for the network's
	// members with the additional data SecretAAD(Name, Version).
	Data     []byte    `json:"data"`
	Modified time.Time `json:"modified"`
	// By is the machine that wrote it.
	By string `json:"by,omitempty"`
}

// Key implements Record.
func (s *Secret) Key() string { return SecretsPrefix + s.Name }

// Kind implements Record.
func (*Secret) Kind() Kind { return KindSecret }

var secretNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,199}$`)

// Validate implements Record.
func (s *Secret) Validate() error {
	if !secretNameRE.MatchString(s.Name) {
		return fmt.Errorf("%w: secret name %q", ErrBadRecord, s.Name)
	}
	if s.Version == "" || len(s.Version) > 64 {
		return fmt.Errorf("%w: secret %q has version %q", ErrBadRecord, s.Name, s.Version)
	}
	return nil
}

// SecretName is the record name of a secret ("secret") or config
// ("config") called name.
func SecretName(kind, name string) string {
	if kind == "config" {
		return "config." + name
	}
	return name
}

// SecretAAD is what a secret's sealed content is bound to: its record
// name and version, so content cannot be moved to another name or
// passed off as another version.
func SecretAAD(name, version string) []byte {
	return []byte("uncloud secret " + name + " " + version)
}
