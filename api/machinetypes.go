package api

import "github.com/uncloud-mesh/uncloud/meshaddr"

// The machine API's request and answer bodies that this package owns.
// Three bodies are types of lower packages and travel as they are (a
// runtime.ContainerSpec, a record.Container, a record.Machine), so their
// JSON is defined in one place; api imports those packages, never the
// store or the agent.

// ReserveRequest asks a machine to promise a subnet to a new machine.
type ReserveRequest struct {
	Subnet    meshaddr.Subnet `json:"subnet"` // a JSON number, 1..254
	MachineID string          `json:"machine_id"`
}

// GossipKeyring is the gossip key in use first, then keys still accepted,
// and the rotation count that orders keyrings.
type GossipKeyring struct {
	Epoch uint64   `json:"epoch"`
	Keys  [][]byte `json:"keys"`
	// Revocations travel with the key, as their removers signed them: the
	// receiver applies them before it adopts the key, so a removed machine
	// is refused before the key it must not have can be asked for.
	Revocations []SignedRecord `json:"revocations,omitempty"`
}

// SignedRecord is a record in its stored, signed form.
type SignedRecord struct {
	Key string `json:"key"`
	Raw []byte `json:"raw"`
}

// ContainerExecRequest runs a command in a container on the callee.
type ContainerExecRequest struct {
	Cmd []string `json:"cmd"`
	// The options are for an attached exec (the exec stream); the plain
	// call runs Cmd as is.
	ExecOptions
}

// ContainerExecResult is a command's outcome; it has runtime.ExecResult's
// shape, so the two convert.
type ContainerExecResult struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
}

// ImageIDAnswer is the callee's ID for an image reference.
type ImageIDAnswer struct {
	ID string `json:"id"`
}

// ImageLoad says what a pushed tarball is (the tag pushed and the image ID
// the sender has) and whether it may replace a tag the callee has for
// another image. The callee checks the tag before reading the tarball, and
// checks what Docker did after, whatever the sender declared.
type ImageLoad struct {
	Ref   string
	ID    string
	Force bool
}

// ImageLoadAnswer names what docker load loaded on the callee.
type ImageLoadAnswer struct {
	Loaded string `json:"loaded"`
}

// RuntimeCapacity answers GET MachinePathRuntimeReady: what the
// machine's Docker reports, for placement. An older agent answers {}:
// zeros mean unknown.
type RuntimeCapacity struct {
	CPUs   int    `json:"cpus,omitempty"`
	Memory int64  `json:"memory,omitempty"` // bytes
	Arch   string `json:"arch,omitempty"`   // Docker's name: x86_64, aarch64…
}
