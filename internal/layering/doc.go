// Package layering holds the test that keeps the package graph layered:
// a package imports only packages below it. The table in layering_test.go
// is the one place that says which layer each package belongs to.
package layering
