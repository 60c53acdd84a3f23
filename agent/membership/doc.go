// Package membership owns who belongs to the network and how one gets in
// or out: the machine state on disk (identity, keys, subnet, seeds), init,
// join tokens and the join call on both sides, subnet reservation by
// majority promise, the machine records and the view of known machines
// (the machine API's authorizer), the add-only revoked set, machine
// rename and roles, and the gossip keyring (rotation on removal, push,
// pull, adoption).
//
// It talks to the rest of the agent only through small interfaces it
// owns (Records, MachineCalls, Device, Gossip): the daemon in package
// agent wires the real store, machine API client, WireGuard device and
// gossip node into them.
package membership
