package api

import "fmt"

// Secrets and configs on the wire (CLI to agent). Their content travels
// in clear only here, over the local socket (or the CLI's SSH tunnel); the
// agent that gets the command seals it before anything is stored or sent
// to another machine.

// FileSpec mounts a secret or config in a service's containers as a file.
type FileSpec struct {
	// Kind is "secret" or "config".
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Target: default /run/secrets/<name> for secrets, /<name> for configs.
	Target string `json:"target,omitempty"`
	Mode   uint32 `json:"mode,omitempty"` // default 0444
	UID    int    `json:"uid,omitempty"`
	GID    int    `json:"gid,omitempty"`
}

// SecretContent is the content of a secret or config to store (sealed)
// under its name; a file that names a secret without content here uses
// the stored one.
type SecretContent struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// MaxSecretBytes bounds one secret's or config's content (Docker swarm's
// bound too).
const MaxSecretBytes = 500 << 10

// String never shows the content.
func (s SecretContent) String() string {
	return fmt.Sprintf("%s %s (%d bytes)", s.Kind, s.Name, len(s.Data))
}
