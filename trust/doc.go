// Package trust owns who may write what in the replicated state: the
// membership statements that admit machines, the signatures every record
// carries, and the revocations that void a removed machine's keys and its
// later signatures.
//
// A Verifier is the store's crdt.Verifier. From the machine and revocation
// records it derives the set of members (machines whose membership chains
// to the network's root key and that no effective revocation names), and
// checks every record read against it: a machine signs its own machine,
// container and token records; any member signs services, certificates
// and revocations. Nothing else in the agent decides trust.
package trust
