// Package meshaddr owns the mesh's address plan and its packet sizes
// (DESIGN §3): the mesh prefix, the join range, a machine's /24 subnet and
// the addresses inside it, and the tunnel MTU every machine derives from its
// underlay. Every other package asks meshaddr rather than spelling an
// address or an overhead itself, so the plan changes in one place.
//
// It imports only the standard library, so any package may use it.
package meshaddr
