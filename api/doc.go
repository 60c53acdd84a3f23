// Package api owns how commands reach agents and agents reach each other:
// the local API on a unix socket that the CLI uses (directly, or through
// SSH from a laptop), the machine-to-machine API on the mesh address,
// authenticated with mutual TLS against each machine's identity key, and
// the join call a new machine makes through its token's temporary peer.
//
// For each API it owns the paths (paths.go: the wire format, unchanged
// across versions), the request and answer bodies, the server side's
// routing where the API is the agent's Backend (NewLocalHandler), and a
// typed client with one method per call: Client for the local API,
// MachineClient for the machine API, Join for the join call. A failed call
// is a *CallError naming the call and the agent or machine; when the other
// side answered, it wraps a *StatusError with its words, which
// errors.Is maps back to ErrNotFound, ErrBadRequest, ErrConflict and
// ErrUnavailable.
//
// Attached exec (exec -i/-t) does not fit one call and one answer: both
// APIs upgrade that call to the exec stream (execupgrade.go), framed both
// ways with its own keepalive (execframe.go), served for an ExecSession
// by ServeExec and driven by the client's session (execstream.go), so an
// agent relays a stream to another machine by serving the one with the
// other.
//
// The package imports nothing of uncloud: the agent implements its
// interfaces (Backend, Authorizer), and the few machine API bodies that
// are records of lower packages travel through MachineClient as values.
//
// A source address is never proof of identity: containers, host-network
// containers and local users can all send from mesh addresses. A machine
// call is accepted only when the caller's TLS key belongs to a known,
// non-revoked machine, and the caller checks the callee's key the same way.
package api
