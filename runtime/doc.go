// Package runtime owns Docker on one machine: the per-machine bridge
// network `uncloud` (the machine's /24, the tunnel MTU, no Docker
// masquerade), the host firewall rules that let the mesh reach containers
// by their own addresses and keep everything else out (firewall.go), the
// security groups' nftables sets (groups.go), containers (create, start, stop, remove, logs,
// exec, inspect), images, health, and the watcher that reports this
// machine's containers as they change. It returns its own types and
// writes nothing to the replicated state: the agent turns what it
// reports into records.
//
// Everything here acts on the local Docker Engine only; the agent calls
// other machines' runtimes through the machine API. The Docker API version
// is negotiated, so the same code talks to Docker 20.10 (API 1.41) and to
// Docker 28 and later, whose bridge networks need an explicit gateway mode
// before routed traffic may reach containers.
package runtime
