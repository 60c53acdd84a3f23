package api

// The machine API of `uncloud image push` between machines (package oci
// owns the registry; DESIGN §13): the source tells each target to pull an
// image it staged in its loopback registry, and the target fetches the
// blobs it lacks from the source.
const (
	// MachinePathImagePullFrom: POST ImagePullFrom; answers ImageProgress
	// lines (NDJSON), the last one final (done, present or failed).
	MachinePathImagePullFrom = "/v1/runtime/images/pull-from"
	// MachinePathRegistryBlobs: GET /{digest}: a blob of the callee's
	// registry store.
	MachinePathRegistryBlobs = "/v1/registry/blobs"
)

// ImagePullFrom asks a machine to pull an image from another machine's
// registry: its manifest comes along (the callee checks it against
// Digest), its blobs are fetched from Source as the callee's Docker asks
// for them.
type ImagePullFrom struct {
	Source    string `json:"source"`     // machine ID of the machine that has the blobs
	Image     string `json:"image"`      // the name it gets, as pushed (repo:tag)
	ID        string `json:"id"`         // the image ID (its config's digest)
	Digest    string `json:"digest"`     // the manifest's digest
	MediaType string `json:"media_type"` // the manifest's media type
	Manifest  []byte `json:"manifest"`   // the manifest's bytes
	Force     bool   `json:"force,omitempty"`
}
