// Package agent is the daemon that wires the parts of a machine together.
//
// For now it runs the static mode: a wg-quick-like file names this
// machine's key, mesh address and port and its peers, and the agent brings
// the mesh up from it and re-applies it on SIGHUP. Later the same agent
// drives the peer set from the replicated state instead of a file.
package agent
