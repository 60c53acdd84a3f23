// Package api owns how commands reach agents: the local API on a unix
// socket that the CLI uses (directly, or through SSH from a laptop), and
// the machine-to-machine API on the mesh address, authenticated with
// mutual TLS against each machine's identity key.
//
// A source address is never proof of identity: containers, host-network
// containers and local users can all send from mesh addresses. A machine
// call is accepted only when the caller's TLS key belongs to a known,
// non-revoked machine, and the caller checks the callee's key the same way.
package api
