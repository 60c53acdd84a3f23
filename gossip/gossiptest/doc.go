// Package gossiptest holds the in-memory stand-in for gossip that the
// tests of its consumers use: many machines in one process, with
// partitions and downed machines, and no sockets.
package gossiptest
