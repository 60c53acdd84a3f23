// Package agent is the composition root of a networked machine: it opens
// the mesh device, gossip, the replicated state, the runtime, the
// resolver and the ingress, wires them to each other, and serves the
// local and machine APIs. What each part does lives in that part's
// package: who is in the network (joins, tokens, subnets, the gossip
// keyring) is agent/membership; what runs where (services, deploys,
// placement, image push) is agent/orchestrate; the static mode (a mesh
// from a file, no state) is agent/static.
package agent
