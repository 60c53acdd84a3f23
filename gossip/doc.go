// Package gossip owns membership, failure detection, machine metadata and
// message broadcast between machines.
//
// It wraps hashicorp/memberlist for a WAN mesh: every packet is encrypted
// with the network keyring and fits a 1420-MTU WireGuard tunnel unfragmented,
// timings are tuned for internet round trips, and the gaps memberlist leaves
// for a replicated store are filled here:
//
//   - memberlist does not relay user messages, so a broadcast is sent
//     straight to every live member, queued for gossip coalesced per
//     (origin, topic, key), and re-gossiped once by every receiver;
//   - memberlist never reconnects the two sides of a healed partition, so
//     known machines are re-joined on a timer;
//   - every push/pull carries each topic's local state (anti-entropy);
//   - malformed, unknown-topic and replayed messages are rejected and
//     counted (see Stats).
//
// The consumer (the replicated store, the agent) meets this package through
// Node's methods and plain callbacks; memberlist itself is reached only
// through the delegate in delegate.go.
package gossip
