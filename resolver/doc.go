// Package resolver owns the DNS server for `.internal`: it answers names of
// machines, containers and services from an in-memory index that follows
// the replicated state (crdt.Store.Watch) and this machine's view of which
// machines it can reach, and forwards every other name to the host's
// upstream resolvers.
//
// Names (all lowercase-insensitive, TTL 5 s):
//
//	<machine>.machine.internal              A    the machine's mesh address (X.1 in its /24)
//	<container>.<machine>.machine.internal  A    the container's address, while it runs
//	<service>.internal                      A    every live container of the service, rotated per query
//	nearest.<service>.internal              A    live containers on this machine, else all of them
//	_<port>._<proto>.<service>.internal     SRV  one target per live container publishing PORT/PROTO
//	_<name>._<proto>.<service>.internal     SRV  the same, by the port's name (e.g. _http._tcp.web.internal)
//	<d>.<c>.<b>.10.in-addr.arpa             PTR  container and machine names for mesh addresses
//	internal                                SOA  the authority in negative answers
//
// A container is live when its record serves (record.Container.Serves:
// running, and healthy if it has a health check; the ingress uses the same
// rule), and its machine is this one or one that Reachability says
// this machine can reach: a partitioned machine's containers leave the
// answers within the failure-detection time and come back when it heals.
// Names without IPv6 get NODATA (NOERROR, empty, SOA in authority) for
// AAAA, and names that do not exist get NXDOMAIN.
//
// The hot path (a UDP query for a name of the zone) touches no store, takes
// no lock and allocates nothing: the index compiles each name into
// pre-packed answer sections, one per rotation, and a query only copies its
// header and question in front of one of them.
package resolver
