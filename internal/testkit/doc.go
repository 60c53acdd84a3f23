// Package testkit holds what tests across the project share: waiting for a
// condition instead of sleeping. It is imported by tests only.
package testkit
