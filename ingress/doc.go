// Package ingress owns the HTTP(S) reverse proxy of machines with the
// ingress role: the routes it derives from the replicated state (services
// published as HOST[/PATH]:PORT/http|https, their running containers on
// reachable machines), balancing and health of those containers, and the
// certificates it obtains through ACME and shares with the other ingress
// machines through the state, sealed for them alone (storage.go), kept
// sealed for the ingress machines of now and re-issued when a removed
// machine could read a key (reseal.go).
//
// Requests of the common shape (HTTP/1.1 with a Content-Length or no body,
// no upgrade, a route of the table) are proxied by a loop of its own
// (fastserve.go, fastparse.go, fastproxy.go, fastresp.go) that parses in place and
// allocates nothing per request; a connection whose request is anything
// else, HTTP/2 included, is handed to net/http at that request's start.
//
// The agent is the only caller. It hands over the state (a *crdt.Store),
// a Reachability (gossip liveness) and a dialer (the netstack's in
// userspace mode); nothing here imports the agent or the mesh device.
package ingress
