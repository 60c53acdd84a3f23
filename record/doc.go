// Package record owns the shapes of what uncloud keeps in its replicated
// state, apart from the engine that stores them (package crdt): the record
// types (machines, containers, services, join tokens, revoked machines,
// ingress certificate blobs), their key prefixes and the validation that
// keeps every record under its own key, the encoding version of each kind,
// the published-port syntax (PortSpec) and the rules that readers must
// agree on, such as which containers serve (Container.Serves).
//
// It imports nothing of uncloud, so the store, the resolver, the ingress,
// the agent and the command line can all share it without depending on
// one another.
package record
