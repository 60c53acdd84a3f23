// Package static owns the static mode: a wg-quick-like file names this
// machine's key, mesh address, port and peers, and the mesh comes up from
// it alone (no gossip, no replicated state) and is re-applied on SIGHUP.
package static
