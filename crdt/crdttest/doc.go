// Package crdttest opens real replicated stores for the tests of the
// packages that consume the state: a store alone on its machine, or
// several replicas carried by gossiptest's in-memory hub.
package crdttest
