// Package nat owns how machines find a path to each other through NATs
// and firewalls: endpoint discovery (a STUN server and client on the
// WireGuard socket itself, so the mapping learnt is the one WireGuard
// uses), the candidate endpoints a machine publishes, ICE-style path
// selection with authenticated probes sent to all of a peer's candidates
// at once (coordinated through a third machine), KubeSpan-style serial
// rotation as the fallback, and a relay of opaque WireGuard datagrams
// through any member when no direct path works.
//
// It meets the packet path only through tun's Bind (a control queue, a
// send hook and a RelayHandler) and the Device's peer API; the agent feeds
// it the peers from the machine records and publishes its candidates.
package nat
